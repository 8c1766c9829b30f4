"""The ``stabilize`` command line, run in-process."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

import pytest

import stabilize
from stabilize.cli import main

NEVER_LOADED = "stabilize_test_never_loaded_cli"


def install_command_module(
    monkeypatch: pytest.MonkeyPatch, name: str, main_fn: Callable[[list[str]], int]
) -> None:
    module = types.ModuleType(name)
    module.main = main_fn  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, name, module)


def test_version_flag(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"stabilize {stabilize.__version__}\n"


def test_version_command(capsys):
    assert main(["version"]) == 0
    assert capsys.readouterr().out == f"stabilize {stabilize.__version__}\n"


def test_help_lists_builtins_and_plugin_commands_without_loading_them(
    fake_plugins, monkeypatch, capsys
):
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps help to the terminal width
    fake_plugins.add_dist(
        "stabilize-monitor", "0.4.2", {"stabilize.cli": {"monitor": f"{NEVER_LOADED}:main"}}
    )
    fake_plugins.add_dist(
        "stabilize-stream", "0.19.0", {"stabilize.cli": {"serve": f"{NEVER_LOADED}:serve"}}
    )

    assert main(["--help"]) == 0

    out = capsys.readouterr().out
    for command in ("version", "demo", "monitor", "serve"):
        assert f"\n    {command} " in out
    assert "stabilize-monitor 0.4.2" in out
    assert "stabilize-stream 0.19.0" in out
    assert NEVER_LOADED not in sys.modules


def test_plugin_command_gets_remaining_argv_and_sets_exit_code(fake_plugins, monkeypatch):
    calls = []

    def serve(argv):
        calls.append(argv)
        return 3

    install_command_module(monkeypatch, "fake_stream_cli", serve)
    fake_plugins.add("stabilize.cli", "serve", "fake_stream_cli:main")

    assert main(["serve", "--port", "0", "--help"]) == 3
    assert calls == [["--port", "0", "--help"]]


def test_plugin_command_exiting_through_system_exit(fake_plugins, monkeypatch):
    def monitor(argv):
        raise SystemExit(4)

    install_command_module(monkeypatch, "fake_monitor_cli", monitor)
    fake_plugins.add("stabilize.cli", "monitor", "fake_monitor_cli:main")

    assert main(["monitor"]) == 4


def test_builtin_command_wins_over_a_plugin(fake_plugins, capsys):
    fake_plugins.add("stabilize.cli", "version", f"{NEVER_LOADED}:main")

    assert main(["version"]) == 0
    assert capsys.readouterr().out == f"stabilize {stabilize.__version__}\n"
    assert NEVER_LOADED not in sys.modules


def test_unknown_command_exits_2(fake_plugins, capsys):
    fake_plugins.add("stabilize.cli", "monitor", f"{NEVER_LOADED}:main")

    assert main(["bogus", "--flag"]) == 2

    err = capsys.readouterr().err
    assert "unknown command 'bogus'" in err
    assert "monitor" in err
    assert NEVER_LOADED not in sys.modules


def test_no_command_exits_2(fake_plugins, capsys):
    assert main([]) == 2
    assert "usage: stabilize" in capsys.readouterr().err


def test_unknown_option_exits_2(fake_plugins, capsys):
    assert main(["--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_broken_plugin_command_reports_the_plugin(fake_plugins, capsys):
    fake_plugins.add_dist(
        "stabilize-monitor", "0.4.2", {"stabilize.cli": {"monitor": f"{NEVER_LOADED}:main"}}
    )

    assert main(["monitor"]) == 1

    err = capsys.readouterr().err
    assert "'monitor'" in err
    assert "'stabilize.cli'" in err
    assert "stabilize-monitor 0.4.2" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["demo"], {"db_path": "stabilize-demo.db", "workers": 4}),
        (["demo", "--db", "x/run.db", "--workers", "2"], {"db_path": "x/run.db", "workers": 2}),
    ],
)
def test_demo_passes_its_options_to_run_demo(monkeypatch, argv, expected):
    # stabilize.demo is tested on its own; here it is replaced to check the wiring only.
    calls = []

    def run_demo(db_path, workers, out):
        calls.append({"db_path": db_path, "workers": workers})
        assert out is sys.stdout
        return 7

    demo = types.ModuleType("stabilize.demo")
    demo.run_demo = run_demo  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "stabilize.demo", demo)

    assert main(argv) == 7
    assert calls == [expected]


def test_demo_refuses_zero_workers(capsys):
    assert main(["demo", "--workers", "0"]) == 2
    assert "must be at least 1" in capsys.readouterr().err
