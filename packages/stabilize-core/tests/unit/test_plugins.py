"""Entry-point discovery: lazy exports, install hints, conflicts, task plugins."""

from __future__ import annotations

import sys
import types

import pytest

import stabilize
from stabilize import _plugins
from stabilize.errors import TaskNotFoundError
from stabilize.models.stage import StageExecution
from stabilize.tasks.interface import Task
from stabilize.tasks.registry import TaskRegistry
from stabilize.tasks.result import TaskResult

# Modules named in entry points that no test creates: loading one of them fails, so a
# test that names one proves the entry point was never loaded.
NEVER_LOADED = "stabilize_test_never_loaded_plugin"


class PluginTask(Task):
    def execute(self, stage: StageExecution) -> TaskResult:
        raise NotImplementedError


class ExplicitTask(Task):
    def execute(self, stage: StageExecution) -> TaskResult:
        raise NotImplementedError


def make_plugin_module(monkeypatch: pytest.MonkeyPatch, name: str, **attrs: object) -> None:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)


def test_group_maps_entry_names_without_importing(fake_plugins):
    ep = fake_plugins.add("stabilize.tasks", "approval", f"{NEVER_LOADED}:ApprovalTask")
    fake_plugins.add("stabilize.cli", "serve", f"{NEVER_LOADED}:main")

    assert _plugins.group("stabilize.tasks") == {"approval": ep}
    assert NEVER_LOADED not in sys.modules


def test_group_is_cached_until_cleared(fake_plugins):
    fake_plugins.add("stabilize.tasks", "a", f"{NEVER_LOADED}:A")
    _plugins.group("stabilize.tasks")
    fake_plugins.add("stabilize.tasks", "b", f"{NEVER_LOADED}:B")

    assert list(_plugins.group("stabilize.tasks")) == ["a"]
    assert fake_plugins.scans == 1
    _plugins.group.cache_clear()
    assert sorted(_plugins.group("stabilize.tasks")) == ["a", "b"]


def test_disabled_autoload_empties_every_group(fake_plugins, monkeypatch):
    fake_plugins.add("stabilize.exports", "ApprovalTask", f"{NEVER_LOADED}:ApprovalTask")
    monkeypatch.setenv("STABILIZE_DISABLE_PLUGIN_AUTOLOAD", "1")

    assert _plugins.group("stabilize.exports") == {}
    assert _plugins.export_names() == []
    assert _plugins.cli_commands() == {}
    assert fake_plugins.scans == 0


def test_lazy_export_loads_and_is_cached_in_globals(fake_plugins, monkeypatch):
    class ApprovalTask:
        pass

    make_plugin_module(monkeypatch, "fake_hitl", ApprovalTask=ApprovalTask)
    fake_plugins.add("stabilize.exports", "ApprovalTask", "fake_hitl:ApprovalTask")
    assert "ApprovalTask" not in vars(stabilize)

    from stabilize import ApprovalTask as loaded

    assert loaded is ApprovalTask  # type: ignore[comparison-overlap]
    assert vars(stabilize)["ApprovalTask"] is ApprovalTask
    # Later lookups come from the module's globals, not from the plugin metadata.
    fake_plugins.entry_points.clear()
    _plugins.group.cache_clear()
    assert stabilize.ApprovalTask is ApprovalTask  # type: ignore[comparison-overlap]
    assert fake_plugins.scans == 1


def test_export_names_are_listed_by_dir(fake_plugins):
    fake_plugins.add("stabilize.exports", "WorkflowStream", f"{NEVER_LOADED}:WorkflowStream")
    fake_plugins.add("stabilize.exports", "approve", f"{NEVER_LOADED}:approve")

    assert _plugins.export_names() == ["WorkflowStream", "approve"]
    assert {"WorkflowStream", "approve", "Workflow"} <= set(dir(stabilize))
    assert NEVER_LOADED not in sys.modules


def test_lazy_names_stay_out_of_all(fake_plugins):
    fake_plugins.add("stabilize.exports", "ApprovalTask", f"{NEVER_LOADED}:ApprovalTask")

    assert "ApprovalTask" not in stabilize.__all__


def test_missing_extension_gives_install_hint_when_autoload_disabled(monkeypatch):
    monkeypatch.setenv("STABILIZE_DISABLE_PLUGIN_AUTOLOAD", "1")

    with pytest.raises(ModuleNotFoundError) as excinfo:
        from stabilize import ApprovalTask  # noqa: F401

    message = str(excinfo.value)
    assert "stabilize.ApprovalTask needs stabilize-hitl: pip install stabilize-hitl" in message
    assert "STABILIZE_DISABLE_PLUGIN_AUTOLOAD" in message
    assert excinfo.value.name == "stabilize.hitl"


@pytest.mark.parametrize(("name", "dist"), sorted(_plugins.OPTIONAL_EXPORTS.items()))
def test_every_optional_export_names_its_distribution(fake_plugins, name, dist):
    with pytest.raises(ModuleNotFoundError, match=f"needs {dist}: pip install {dist}"):
        getattr(stabilize, name)


def test_optional_export_table_covers_the_extensions():
    assert _plugins.OPTIONAL_EXPORTS == {
        "AgentLoopTask": "stabilize-llm",
        "ApprovalTask": "stabilize-hitl",
        "LLMClient": "stabilize-llm",
        "LLMTask": "stabilize-llm",
        "StreamItem": "stabilize-stream",
        "ToolError": "stabilize-llm",
        "ToolRegistry": "stabilize-llm",
        "WorkflowStream": "stabilize-stream",
        "approve": "stabilize-hitl",
        "get_signal": "stabilize-hitl",
        "reject": "stabilize-hitl",
        "send_signal": "stabilize-hitl",
        "tool": "stabilize-llm",
    }


def test_unknown_name_is_an_attribute_error(fake_plugins):
    with pytest.raises(AttributeError, match="module 'stabilize' has no attribute 'Nonexistent'"):
        stabilize.Nonexistent  # noqa: B018
    assert not hasattr(stabilize, "Nonexistent")
    with pytest.raises(ImportError, match="cannot import name 'Nonexistent'"):
        from stabilize import Nonexistent  # noqa: F401


def test_dunder_probes_do_not_scan_plugins(fake_plugins):
    assert not hasattr(stabilize, "__wrapped__")
    assert fake_plugins.scans == 0


def test_two_distributions_claiming_one_export_name_both(fake_plugins, monkeypatch):
    make_plugin_module(monkeypatch, "fake_hitl", ApprovalTask=object(), approve=object())
    fake_plugins.add_dist(
        "stabilize-hitl",
        "0.19.0",
        {"stabilize.exports": {"ApprovalTask": "fake_hitl:ApprovalTask"}},
    )
    fake_plugins.add_dist(
        "stabilize-approvals",
        "2.1.0",
        {
            "stabilize.exports": {
                "ApprovalTask": "fake_hitl:ApprovalTask",
                "approve": "fake_hitl:approve",
            }
        },
    )

    # The scan itself succeeds, and an unclaimed name still loads.
    assert _plugins.export_names() == ["ApprovalTask", "approve"]
    assert stabilize.approve is sys.modules["fake_hitl"].approve

    with pytest.raises(_plugins.PluginConflictError) as excinfo:
        from stabilize import ApprovalTask  # noqa: F401

    message = str(excinfo.value)
    assert "stabilize-hitl 0.19.0" in message
    assert "stabilize-approvals 2.1.0" in message
    assert "'ApprovalTask'" in message
    assert "'stabilize.exports'" in message
    assert isinstance(excinfo.value, ImportError)
    assert [ep.dist.name for ep in excinfo.value.claims if ep.dist] == [
        "stabilize-hitl",
        "stabilize-approvals",
    ]
    assert "ApprovalTask" not in vars(stabilize)


def test_conflicting_task_plugins_fail_when_used(fake_plugins):
    for dist in ("stabilize-one", "stabilize-two"):
        fake_plugins.add_dist(dist, "1.0", {"stabilize.tasks": {"shared": f"{NEVER_LOADED}:T"}})

    with pytest.raises(
        _plugins.PluginConflictError, match=r"stabilize-one 1\.0.*stabilize-two 1\.0"
    ):
        TaskRegistry().get("shared")


def test_one_distribution_seen_twice_is_not_a_conflict(fake_plugins, monkeypatch):
    make_plugin_module(monkeypatch, "fake_stream", WorkflowStream=object())
    entries = {"stabilize.exports": {"WorkflowStream": "fake_stream:WorkflowStream"}}
    fake_plugins.add_dist("stabilize-stream", "0.19.0", entries)
    fake_plugins.add_dist("stabilize-stream", "0.19.0", entries)

    from stabilize import WorkflowStream

    assert WorkflowStream is sys.modules["fake_stream"].WorkflowStream


def test_broken_plugin_names_group_entry_and_distribution(fake_plugins):
    fake_plugins.add_dist(
        "stabilize-broken", "0.3.0", {"stabilize.exports": {"Broken": f"{NEVER_LOADED}:Broken"}}
    )

    with pytest.raises(ImportError) as excinfo:
        from stabilize import Broken  # noqa: F401

    message = str(excinfo.value)
    assert "'Broken'" in message
    assert "'stabilize.exports'" in message
    assert "stabilize-broken 0.3.0" in message
    assert "pip install" not in message
    assert isinstance(excinfo.value.__cause__, ModuleNotFoundError)


def test_plugin_missing_its_attribute_is_an_import_error_not_attribute_error(
    fake_plugins, monkeypatch
):
    # An AttributeError escaping stabilize.__getattr__ would read as "no such name".
    make_plugin_module(monkeypatch, "fake_llm")
    fake_plugins.add("stabilize.exports", "LLMClient", "fake_llm:LLMClient")

    with pytest.raises(ImportError, match=r"'LLMClient'.*'stabilize\.exports'") as excinfo:
        stabilize.LLMClient  # noqa: B018
    assert isinstance(excinfo.value.__cause__, AttributeError)
    assert not isinstance(excinfo.value, ModuleNotFoundError)


def test_plugin_raising_on_import_is_wrapped(fake_plugins, monkeypatch):
    ep = fake_plugins.add("stabilize.tasks", "boom", "stabilize_test_boom_plugin:Task")

    class Boom(Exception):
        pass

    class ExplodingFinder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "stabilize_test_boom_plugin":
                raise Boom("plugin exploded")
            return None

    monkeypatch.setattr(sys, "meta_path", [ExplodingFinder, *sys.meta_path])

    with pytest.raises(ImportError, match="plugin exploded") as excinfo:
        _plugins.load_entry_point(ep)
    assert isinstance(excinfo.value.__cause__, Boom)
    assert "'boom'" in str(excinfo.value)
    assert "an unknown distribution" in str(excinfo.value)


def test_load_task_returns_none_when_no_plugin_offers_it(fake_plugins):
    assert _plugins.load_task("missing") is None


def test_registry_miss_loads_the_plugin_task(fake_plugins, monkeypatch):
    make_plugin_module(monkeypatch, "fake_tasks", PluginTask=PluginTask)
    fake_plugins.add("stabilize.tasks", "x", "fake_tasks:PluginTask")

    registry = TaskRegistry()

    assert isinstance(registry.get("x"), PluginTask)
    assert "x" in registry


def test_registry_accepts_a_zero_argument_factory_plugin(fake_plugins, monkeypatch):
    made = PluginTask()
    make_plugin_module(monkeypatch, "fake_factory", make=lambda: made)
    fake_plugins.add("stabilize.tasks", "factory", "fake_factory:make")

    assert TaskRegistry().get("factory") is made


def test_explicit_registration_wins_over_a_plugin(fake_plugins):
    fake_plugins.add("stabilize.tasks", "x", f"{NEVER_LOADED}:PluginTask")
    registry = TaskRegistry()
    registry.register("x", ExplicitTask)

    assert isinstance(registry.get("x"), ExplicitTask)
    assert NEVER_LOADED not in sys.modules


def test_builtin_task_wins_over_a_plugin(fake_plugins):
    fake_plugins.add("stabilize.tasks", "noop", f"{NEVER_LOADED}:PluginTask")

    assert type(TaskRegistry().get("noop")).__name__ == "NoOpTask"
    assert NEVER_LOADED not in sys.modules


def test_registry_miss_without_plugin_raises(fake_plugins):
    with pytest.raises(TaskNotFoundError, match="'x'"):
        TaskRegistry().get("x")


def test_cli_commands_reads_the_cli_group(fake_plugins):
    ep = fake_plugins.add("stabilize.cli", "monitor", f"{NEVER_LOADED}:main")
    fake_plugins.add("stabilize.tasks", "monitor", f"{NEVER_LOADED}:Task")

    assert _plugins.cli_commands() == {"monitor": ep}


def test_describe_dist_names_the_distribution(fake_plugins):
    fake_plugins.add_dist("stabilize-monitor", "0.4.2", {"stabilize.cli": {"monitor": "m:main"}})
    [ep] = fake_plugins.entry_points

    assert _plugins.describe_dist(ep) == "stabilize-monitor 0.4.2"
    assert _plugins.describe_dist(fake_plugins.add("g", "n", "m:v")) == "an unknown distribution"


@pytest.mark.parametrize("name", sorted(_plugins.REPLACED_NAMES))
def test_a_name_left_out_on_purpose_says_what_to_use_instead(name):
    with pytest.raises(ImportError, match=r"trace_operation\(\)") as excinfo:
        exec(f"from stabilize import {name}", {})
    assert isinstance(excinfo.value, _plugins.RemovedNameError)
    assert f"stabilize.{name} does not exist here" in str(excinfo.value)
