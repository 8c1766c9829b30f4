"""Independent versions that still fit together (issue 14).

Each member of the workspace has its own version, and each declares the range of the other
members it works with. These tests read every member's pyproject.toml and fail when a range
excludes the version of that member in the workspace (a bump that forgot a range, or a range
that forgot a bump), when the `stabilize` distribution's extras miss a member, or when a
member is missing from the root's `[tool.uv.sources]`.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[3]
META = canonicalize_name("stabilize")
CORE = canonicalize_name("stabilize-core")
# The extras `pip install "stabilize[...]"` offers, each with the member it installs.
META_EXTRAS = {
    "postgres": CORE,
    "http": CORE,
    "observability": CORE,
    "llm": canonicalize_name("stabilize-llm"),
    "hitl": canonicalize_name("stabilize-hitl"),
    "stream": canonicalize_name("stabilize-stream"),
    "monitor": canonicalize_name("stabilize-monitor"),
}
LOWER = {">=", ">", "~=", "==", "==="}
UPPER = {"<", "<=", "~=", "==", "==="}


@dataclass(frozen=True)
class Member:
    """One distribution of the workspace, as its pyproject.toml declares it."""

    name: NormalizedName
    version: Version
    path: Path
    project: dict[str, Any]

    def requirements(self) -> list[tuple[str, str]]:
        """Every requirement as written, with where ("dependencies", "extra llm")."""
        found = [("dependencies", r) for r in self.project.get("dependencies", [])]
        for extra, reqs in self.project.get("optional-dependencies", {}).items():
            found += [(f"extra {extra}", r) for r in reqs]
        return found


def load_members(root: Path) -> dict[NormalizedName, Member]:
    """The members of the workspace at `root`, by normalized name."""
    workspace = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
    members: dict[NormalizedName, Member] = {}
    for pattern in workspace["members"]:
        for path in sorted(root.glob(f"{pattern}/pyproject.toml")):
            project = tomllib.loads(path.read_text())["project"]
            name = canonicalize_name(project["name"])
            members[name] = Member(name, Version(project["version"]), path, project)
    return members


def range_errors(root: Path, members: dict[NormalizedName, Member]) -> list[str]:
    """What is wrong with the ranges the members declare on each other."""
    errors = []
    for member in members.values():
        where_file = member.path.relative_to(root)
        for where, written in member.requirements():
            req = Requirement(written)
            target = members.get(canonicalize_name(req.name))
            if target is None:
                continue
            operators = {spec.operator for spec in req.specifier}
            if not (operators & LOWER) or not (operators & UPPER):
                errors.append(
                    f"{where_file} ({where}): {written!r} must declare a range with a lower and an "
                    f"upper bound"
                )
            if not req.specifier.contains(target.version, prereleases=True):
                errors.append(
                    f"{where_file} ({where}): {written!r} excludes {target.name} {target.version}, "
                    f"the version in the workspace"
                )
    return errors


@pytest.fixture(scope="module")
def members() -> dict[NormalizedName, Member]:
    return load_members(ROOT)


def test_every_member_is_found(members):
    assert {
        "stabilize",
        "stabilize-core",
        "stabilize-hitl",
        "stabilize-llm",
        "stabilize-monitor",
        "stabilize-stream",
    } <= set(members)


def test_declared_ranges_include_the_workspace_versions(members):
    assert range_errors(ROOT, members) == []


def test_a_range_that_excludes_a_workspace_version_is_named(tmp_path):
    write_workspace(
        tmp_path,
        {
            "stabilize-core": ("0.20.0", []),
            "stabilize-hitl": ("0.19.2", ["stabilize-core>=0.19,<0.20"]),
            "stabilize-llm": ("0.19.2", ["stabilize-core>=0.19,<0.21"]),
            "stabilize-stream": ("0.19.2", ["stabilize-core"]),
        },
    )
    assert range_errors(tmp_path, load_members(tmp_path)) == [
        "packages/stabilize-hitl/pyproject.toml (dependencies): 'stabilize-core>=0.19,<0.20' "
        "excludes stabilize-core 0.20.0, the version in the workspace",
        "packages/stabilize-stream/pyproject.toml (dependencies): 'stabilize-core' must "
        "declare a range with a lower and an upper bound",
    ]


def test_a_range_in_an_extra_is_checked_too(tmp_path):
    write_workspace(
        tmp_path,
        {
            "stabilize-core": ("0.20.0", []),
            "stabilize-hitl": ("0.20.0", ["stabilize-core>=0.20,<0.21"]),
            "stabilize": ("0.20.0", [], {"hitl": ["stabilize-hitl>=0.19.2,<0.20"]}),
        },
    )
    assert range_errors(tmp_path, load_members(tmp_path)) == [
        "packages/stabilize/pyproject.toml (extra hitl): 'stabilize-hitl>=0.19.2,<0.20' "
        "excludes stabilize-hitl 0.20.0, the version in the workspace",
    ]


def test_the_stabilize_extras_install_every_member(members):
    extras = members[META].project["optional-dependencies"]
    named = {
        extra: {canonicalize_name(Requirement(r).name) for r in reqs}
        for extra, reqs in extras.items()
    }
    assert set(named) == {*META_EXTRAS, "all"}
    for extra, member in META_EXTRAS.items():
        assert member in named[extra], f"stabilize[{extra}] does not install {member}"
    assert named["all"] == set(members) - {META}, "stabilize[all] must install every member"
    # `all` is the union of the others, core's extras included.
    core_extras = {
        extra
        for reqs in extras.values()
        for r in map(Requirement, reqs)
        if canonicalize_name(r.name) == CORE
        for extra in r.extras
    }
    (core_in_all,) = [
        r for r in map(Requirement, extras["all"]) if canonicalize_name(r.name) == CORE
    ]
    assert core_extras == {"postgres", "http", "observability"} == core_in_all.extras


def test_the_stabilize_distribution_ships_no_code(members):
    meta = members[META]
    assert tomllib.loads(meta.path.read_text())["tool"]["uv"]["build-backend"]["module-name"] == []
    assert not (meta.path.parent / "src").exists()


def test_the_stabilize_version_follows_the_core_it_requires(members):
    meta, core = members[META], members[CORE]
    assert meta.version.release[:2] == core.version.release[:2]
    (requires_core,) = [
        r
        for r in map(Requirement, meta.project["dependencies"])
        if canonicalize_name(r.name) == CORE
    ]
    assert requires_core.specifier.contains(core.version)


def test_the_root_sources_name_every_member(members):
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    sources = {canonicalize_name(name): s for name, s in root["tool"]["uv"]["sources"].items()}
    for name in members:
        assert sources.get(name) == {"workspace": True}, f"{name} missing from tool.uv.sources"


def test_the_environment_has_the_workspace_versions(members):
    # A stale environment reports old metadata (`stabilize --version` reads it): re-sync.
    for name, member in members.items():
        installed = Version(importlib.metadata.version(name))
        assert installed == member.version, f"{name}: run `uv sync --all-packages`"


def write_workspace(
    root: Path,
    members: dict[str, tuple[str, list[str]] | tuple[str, list[str], dict[str, list[str]]]],
) -> None:
    (root / "pyproject.toml").write_text('[tool.uv.workspace]\nmembers = ["packages/*"]\n')
    for name, (version, dependencies, *extras) in members.items():
        project = root / "packages" / name
        project.mkdir(parents=True)
        lines = [
            "[project]",
            f"name = {name!r}",
            f"version = {version!r}",
            f"dependencies = {dependencies!r}",
        ]
        if extras:
            lines.append("[project.optional-dependencies]")
            lines += [f"{extra} = {reqs!r}" for extra, reqs in extras[0].items()]
        (project / "pyproject.toml").write_text("\n".join(lines) + "\n")
