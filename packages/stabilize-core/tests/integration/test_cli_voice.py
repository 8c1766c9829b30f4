"""Every ``stabilize`` command speaks alike (issue 15): help, errors and exit codes.

Core's built-ins and whichever plugin commands are installed: a one-sentence summary in
``stabilize --help`` (the same as the command's own ``--help``), an ``Example:`` section,
upper-case metavars, defaults shown as ``(default: ...)``, ``-v/--verbose``; a failure is
one line ``stabilize <command>: error: ...`` (exit 2 for usage, 1 otherwise), with a
traceback only under ``--verbose``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stabilize._cli_support import CommandError, command_parser, error_line, run_command
from stabilize._plugins import cli_commands

BUILTINS = ["version", "prompt", "demo", "mg-up", "mg-status", "purge"]
PLUGINS = ["serve", "approve", "reject", "monitor"]
DOWN_URL = "postgresql://root@127.0.0.1:1/test"
SENTENCE = re.compile(r"[A-Z][^.]*(\.[^ .][^.]*)*\.")
"""One sentence: a capital, no full stop but the last (dots inside words are fine)."""


def stabilize(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "STABILIZE_DISABLE_PLUGIN_AUTOLOAD"}
    return subprocess.run(
        [sys.executable, "-m", "stabilize", *args],
        capture_output=True,
        text=True,
        env={**base, "COLUMNS": "200", **(env or {})},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=50,
    )


def installed(command: str) -> bool:
    return command in BUILTINS or command in cli_commands()


def commands() -> list[str]:
    return [c for c in [*BUILTINS, *PLUGINS] if installed(c)]


def summaries(help_text: str) -> dict[str, str]:
    """``stabilize --help``'s commands section: name -> summary (without ``(from ...)``)."""
    section = help_text.split("commands:", 1)[1].split("\n\n", 1)[0]
    found = {}
    for line in section.splitlines():
        match = re.match(r"^ {4}(\S+)\s+(.*?)(?: \(from [^)]*\))?$", line)
        if match:
            found[match[1]] = match[2]
    return found


def one_error_line(proc: subprocess.CompletedProcess[str], command: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"stabilize {command}: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


# -- help ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def top_help() -> str:
    proc = stabilize("--help")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_stabilize_help_gives_every_command_one_sentence(top_help: str) -> None:
    listed = summaries(top_help)

    assert set(commands()) <= set(listed)
    for command in commands():
        assert SENTENCE.fullmatch(listed[command]), (command, listed[command])
    assert "Example:\n  stabilize " in top_help


@pytest.mark.parametrize("command", [*BUILTINS, *PLUGINS])
def test_every_command_help_has_the_shared_shape(command: str, top_help: str) -> None:
    if not installed(command):
        pytest.skip(f"{command} is not installed")

    proc = stabilize(command, "--help")

    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(f"usage: stabilize {command} ")
    description = out.split("\n\n", 2)[1]
    assert description == summaries(top_help)[command]  # one sentence, said once
    assert f"\nExample:\n  stabilize {command}" in out
    assert "-v, --verbose" in out
    usage = " ".join(out.split("\n\n", 1)[0].split())
    for option, metavar in re.findall(r"\[?(--[a-z-]+) ([^\s\]\[]+)", usage):
        assert re.fullmatch(r"[A-Z_]+|\{[^}]*\}", metavar), (option, metavar)
    if "--db-url" in usage:
        assert "--db-url URL" in usage
        assert "--schema NAME" in usage
    options = " ".join(out.split("options:", 1)[1].split("Example:", 1)[0].split())
    for word in re.finditer(r"default", options):
        assert options[word.start() - 1 : word.end() + 1] == "(default:", options


# -- errors ----------------------------------------------------------------------------------


def failures(tmp_path: Path) -> list[tuple[str, list[str], int, str]]:
    """(command, argv, exit code, text the error line holds) for every installed command."""
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    cases = [
        ("version", ["version", "--bogus"], 2, "unrecognized arguments: --bogus"),
        ("demo", ["demo", "--workers", "0"], 2, "argument --workers: must be at least 1"),
        ("mg-up", ["mg-up", "--db-url", "garbage"], 2, "not a database URL: 'garbage'"),
        ("mg-status", ["mg-status", "--db-url", missing], 1, "no stabilize database at"),
        ("mg-status", ["mg-status", "--db-url", DOWN_URL], 1, "cannot connect to PostgreSQL"),
        ("purge", ["purge", "--db-url", missing], 2, "required: --older-than"),
        ("serve", ["serve", "--db-url", missing], 1, "no stabilize database at"),
        ("serve", ["serve", "--db-url", "x.db"], 2, "not a database URL: 'x.db'"),
        ("approve", ["approve", "wf_1", "gate", "--db-url", missing], 1, "no stabilize database"),
        ("reject", ["reject", "wf_1"], 2, "required: STAGE, --db-url"),
        ("monitor", ["monitor", "--db-url", missing], 1, "no stabilize database at"),
        ("monitor", ["monitor", "--refresh", "0", "--db-url", missing], 2, "must be above 0"),
    ]
    return [case for case in cases if installed(case[0])]


def test_every_failure_is_one_line_with_its_exit_code(tmp_path: Path) -> None:
    for command, argv, code, text in failures(tmp_path):
        proc = stabilize(*argv, cwd=tmp_path)

        assert proc.returncode == code, (argv, proc.stderr)
        assert text in one_error_line(proc, command), argv
    assert list(tmp_path.iterdir()) == []  # no command created the missing database


def test_verbose_shows_the_traceback_then_the_same_line(tmp_path: Path) -> None:
    for _command, argv, code, _text in failures(tmp_path):
        if code != 1:
            continue
        quiet = stabilize(*argv, cwd=tmp_path)

        loud = stabilize(*argv, "--verbose", cwd=tmp_path)

        assert loud.returncode == 1, loud.stderr
        assert loud.stderr.startswith("Traceback (most recent call last):"), loud.stderr
        assert loud.stderr.splitlines()[-1] == quiet.stderr.strip()


def test_a_bad_environment_value_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "wf.db"

    proc = stabilize(
        "mg-up", "--db-url", f"sqlite:///{path}", env={"STABILIZE_SQLITE_JOURNAL_MODE": "wall"}
    )

    assert proc.returncode == 1
    assert "STABILIZE_SQLITE_JOURNAL_MODE='WALL' is not one of" in one_error_line(proc, "mg-up")
    assert "'WAL'" in proc.stderr
    assert not path.exists()


def test_a_missing_plugin_command_says_what_to_install() -> None:
    proc = stabilize("serve", "--db-url", "x", env={"STABILIZE_DISABLE_PLUGIN_AUTOLOAD": "1"})

    assert proc.returncode == 1
    line = one_error_line(proc, "serve")
    assert "comes with stabilize-stream, which is not installed: pip install stabilize-stream" in (
        line
    )


# -- the helper itself -----------------------------------------------------------------------


def test_an_unexpected_exception_is_one_line_that_points_at_verbose(capsys):
    parser = command_parser("try", "Try something.", examples=["stabilize try"])

    def buggy(ns: object) -> int:
        raise ZeroDivisionError("division by zero")

    def refused(ns: object) -> int:
        raise ValueError("--schema applies to PostgreSQL URLs only")

    assert run_command("try", parser, [], buggy) == 1
    assert capsys.readouterr().err == (
        "stabilize try: error: ZeroDivisionError: division by zero "
        "(run again with --verbose for the traceback)\n"
    )
    assert run_command("try", parser, [], refused) == 1
    assert capsys.readouterr().err == (
        "stabilize try: error: --schema applies to PostgreSQL URLs only\n"
    )


@settings(max_examples=150, deadline=None)
@given(message=st.text(), usage=st.booleans())
@example(message="first\nsecond\r\nthird", usage=False)
@example(message="\u2028", usage=True)
def test_a_command_error_is_always_one_line(message: str, usage: bool) -> None:
    import io

    parser = command_parser("try", "Try something.", examples=["stabilize try"])

    def handler(ns: object) -> int:
        raise CommandError(message, usage=usage)

    err = io.StringIO()
    code = run_command("try", parser, [], handler, stderr=err)

    assert code == (2 if usage else 1)
    assert err.getvalue() == error_line("try", message) + "\n"
    assert len(err.getvalue().splitlines()) == 1
