"""The ``stabilize`` command line, run in-process."""

from __future__ import annotations

import io
import re
import sys
import types
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from datetime import timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import stabilize
from stabilize._cli_support import UsageError, command_parser
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


# -- purge's options: refused in one line, never a traceback (issue 13) ---------------------
# The URL names no database, so the command stops before touching any file: a duration
# argparse accepted shows up as the URL's refusal instead of the duration's.

NO_DATABASE = "--db-url=not-a-database-url"
DURATION = re.compile(r"\s*([0-9]+)([dhms])\s*", re.IGNORECASE)
UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
MAX_SECONDS = timedelta.max.days * 86400 + timedelta.max.seconds  # exact, unlike a float


def run_quietly(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def test_purge_refuses_an_out_of_range_duration_in_one_line(capsys):
    assert main(["purge", NO_DATABASE, "--older-than", "99999999999999999999d"]) == 2

    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        "stabilize purge: error: argument --older-than: duration out of range: "
        "'99999999999999999999d' (at most 999999999 days)"
    )


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(
        st.text(),
        st.from_regex(r"\A\s?[0-9]{1,25}[dhmsDHMS]\s?\Z"),
    )
)
@example(text="99999999999999999999d")
@example(text="999999999d")
@example(text="1000000000d")
@example(text="²d")
@example(text="-5d")
def test_purge_accepts_exactly_the_durations_it_can_represent(text):
    code, err = run_quietly(["purge", NO_DATABASE, f"--older-than={text}"])

    assert code == 2
    match = DURATION.fullmatch(text)
    seconds = int(match[1]) * UNIT_SECONDS[match[2].lower()] if match else None
    if seconds is not None and seconds <= MAX_SECONDS:
        assert "not a database URL" in err
    else:
        assert "argument --older-than: " in err
        assert "Traceback" not in err


@pytest.mark.parametrize("value", ["0", "-1", "2147483648", "99999999999999999999", "x"])
def test_purge_refuses_a_batch_size_out_of_range(value, capsys):
    assert main(["purge", NO_DATABASE, "--older-than", "1d", f"--batch-size={value}"]) == 2
    assert "argument --batch-size: " in capsys.readouterr().err


@pytest.mark.parametrize("command", ["mg-up", "mg-status", "purge"])
def test_a_command_names_the_url_forms_it_accepts(command, capsys):
    extra = ["--older-than", "1d"] if command == "purge" else []

    assert main([command, "--db-url", "garbage", *extra]) == 2

    assert capsys.readouterr().err == (
        f"stabilize {command}: error: not a database URL: 'garbage' (accepted: "
        "sqlite:///path/to/file.db, postgresql://user@host:5432/dbname or postgres://...)\n"
    )


def test_an_option_whose_value_is_two_dashes_gets_that_value() -> None:
    # argparse before Python 3.12 hands --name=-- to the command as an empty list.
    parser = command_parser("x", "Test.", examples=["stabilize x"])
    parser.add_argument("--name")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--tags", nargs="*", default=[])
    ns = parser.parse_args(["--name=--"])
    assert (ns.name, ns.count, ns.tags) == ("--", 1, [])
    with pytest.raises(UsageError, match="argument --count: invalid value: '--'"):
        parser.parse_args(["--count=--"])
    parser.add_argument("--format", choices=["json", "text"], default="text")
    with pytest.raises(UsageError, match="argument --format: invalid choice: '--'") as err:
        parser.parse_args(["--format=--"])
    assert "(choose from 'json', 'text')" in str(err.value)
