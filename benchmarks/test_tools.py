"""Checks of the suite's own arithmetic (no engine runs, nothing timed).

Run with ``uv run pytest benchmarks/test_tools.py`` (the project's test paths leave
``benchmarks/`` out).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ab import main as ab_main
from ab import pool_dumps, round_order
from compare import compare, merge
from harness import Target, env_with_engine, is_local_server, server_cpu
from instructions import collected, per_stage
from instructions import main as instructions_main
from latency import handoffs_ms, percentiles
from report import series_rows, summarise
from workers import service_timing, summarise_workers


def test_the_enabling_commit_is_the_last_one_before_the_start() -> None:
    commits = [1.0, 2.0, 3.0, 5.0]
    # Starts at 2.5 (after the commit at 2.0) and 5.25 (after 5.0, not 3.0).
    assert handoffs_ms(commits, [(1.5, 2.5), (4.0, 5.25)]) == [500.0, 250.0]


def test_a_start_without_a_commit_since_the_previous_start_is_refused() -> None:
    with pytest.raises(ValueError, match="no commit between"):
        handoffs_ms([1.0, 2.0], [(2.5, 3.0)])
    with pytest.raises(ValueError, match="no commit between"):
        handoffs_ms([1.0], [(0.0, 0.5)])


def test_percentiles_use_the_nearest_rank() -> None:
    figures = percentiles([float(v) for v in range(100, 0, -1)])
    assert (figures["n"], figures["p50"], figures["p90"], figures["p99"]) == (100, 50, 90, 99)
    assert figures["max"] == 100
    assert percentiles([7.0])["p99"] == 7.0


def _summary(workload: str, mode: str, rate: float, **extra: Any) -> dict[str, Any]:
    return {
        "workload": workload,
        "mode": mode,
        "stages_executed": 100,
        "median_stages_per_s": rate,
        "median_us_per_stage": 1e6 / rate,
        "median_cpu_us_per_stage": 500.0,
        "commits_per_stage": 1.04,
        "peak_rss_mb": 40.0,
        "baseline_rss_mb": 32.0,
        **extra,
    }


def _dump(path: Path, backend: str, results: list[dict[str, Any]], **more: Any) -> str:
    env = {"backend": backend, "events": "on", "database": backend}
    path.write_text(json.dumps({"environment": env, "results": results, "workers": [], **more}))
    return str(path)


def test_compare_matches_rows_by_database_mode_and_workload(tmp_path: Path) -> None:
    old = _dump(tmp_path / "old.json", "sqlite", [_summary("linear_100", "drain", 2000.0)])
    new_sqlite = _dump(
        tmp_path / "new.json",
        "sqlite",
        [
            _summary("linear_100", "drain", 2500.0),
            _summary("linear_100", "service", 1000.0),
            {"workload": "agent_loop_20", "mode": "drain", "skipped": "no llm"},
        ],
    )
    latency = {"workload": "latency", "mode": "service", "poll_ms": 50}
    latency |= {k: {"p50": 1.5, "p99": 9.0} for k in ("handoff_ms", "submit_to_start_ms")}
    new_pg = _dump(tmp_path / "pg.json", "postgres", [], latency=[latency])
    merge(str(tmp_path / "all.json"), [new_sqlite, new_pg])

    lines = compare(old, str(tmp_path / "all.json")).splitlines()

    assert "| linear_100 | SQLite | drain | 2,000 | 2,500 | +25 % |" in lines[2]
    assert lines[3].startswith("| linear_100 | SQLite | service | - | 1,000 | - |")
    assert not any("agent_loop_20" in line for line in lines)
    assert lines[-1] == (
        "| latency | PostgreSQL | service | 50 | - | 1.50 | - | 9.00 | - | 1.50 | - | 9.00 |"
    )


def test_compare_gives_the_server_cpu_when_a_side_measured_it(tmp_path: Path) -> None:
    old = _dump(tmp_path / "old.json", "postgres", [_summary("linear_100", "drain", 300.0)])
    measured = _summary("linear_100", "drain", 330.0, median_server_cpu_us_per_stage=1000.0)
    new = _dump(tmp_path / "new.json", "postgres", [measured])
    lines = compare(old, new).splitlines()
    assert "| server µs/stage before | after |" in lines[0]
    assert lines[1].count("---:") == 11
    assert "| 500 | 500 | - | 1,000 | 1.04 | 1.04 |" in lines[2]
    plain = compare(old, old).splitlines()
    assert "server" not in plain[0]
    assert plain[1].count("---:") == 9


def test_compare_takes_a_workload_run_twice_from_the_run_of_more_repetitions(
    tmp_path: Path,
) -> None:
    suite = _summary("fanout_100", "drain", 4000.0, repeats=3)
    series = _summary("fanout_100", "drain", 1000.0, repeats=1)
    one = _dump(tmp_path / "a.json", "sqlite", [suite])
    two = _dump(tmp_path / "b.json", "sqlite", [series])
    merge(str(tmp_path / "ab.json"), [one, two])
    merge(str(tmp_path / "ba.json"), [two, one])
    for merged in ("ab.json", "ba.json"):
        lines = compare(str(tmp_path / merged), one).splitlines()
        assert "| 4,000 | 4,000 | +0 % |" in lines[2]


def test_series_ratios_are_large_over_small_per_stage() -> None:
    small = _summary("chain_100", "drain", 2000.0)
    large = _summary("chain_2000", "drain", 1000.0, stages_executed=2000, peak_rss_mb=72.0)
    [row] = series_rows([small, large, _summary("chain_100", "service", 1.0)], "drain")
    assert row["wall_us_per_stage"] == [500.0, 1000.0, 2.0]
    # (40 - 32) MB over 100 stages against (72 - 32) MB over 2,000: a fifth per stage.
    assert row["rss_kib_per_stage"][2] == pytest.approx(0.25)
    assert series_rows([small], "drain") == []


def test_service_wall_runs_from_the_first_start_and_reports_the_overlap() -> None:
    # Clock at 100.0 s, the 200 starts done at 100.3 s, the last workflow at 101.0 s.
    timing = service_timing(100.0, 100.3, 101_000)
    assert timing["wall_s"] == pytest.approx(1.0)
    assert timing["submit_s"] == pytest.approx(0.3)
    assert timing["submit_share"] == pytest.approx(0.3)
    assert timing["after_submit_s"] == pytest.approx(0.7)
    # The last commit stamped in the same millisecond as the last start: no negative tail.
    assert service_timing(100.0, 100.5004, 100_500)["after_submit_s"] == 0.0


def _workers_run(mode: str, wall: float, **extra: Any) -> dict[str, Any]:
    return {
        "mode": mode,
        "stages_executed": 1000,
        "stages_per_s": 1000 / wall,
        "wall_s": wall,
        "commits_per_stage": 0.6,
        "commits": 600,
        "peak_rss_kib": 51200,
        "worker_cpu_s": 0.5,
        "machine_busy": 0.9,
        **extra,
    }


def test_workers_summary_gives_the_starts_share_in_service_mode_only() -> None:
    service = [
        _workers_run("service", wall, **service_timing(0.0, submit, int(1000 * wall)))
        for wall, submit in ((1.0, 0.2), (2.0, 0.3), (0.5, 0.25))
    ]
    summary = summarise_workers(4, service)
    assert summary["median_wall_s"] == 1.0
    assert summary["median_submit_s"] == pytest.approx(0.25)
    assert summary["median_submit_share"] == pytest.approx(0.2)  # of 0.2, 0.15 and 0.5
    assert summary["median_worker_cpu_us_per_stage"] == pytest.approx(500.0)
    drained = summarise_workers(4, [_workers_run("drain", 1.0)])
    assert drained["mode"] == "drain"
    assert "median_submit_s" not in drained


def _process(proc: Path, pid: int, comm: str, ticks: tuple[int, int, int, int]) -> None:
    entry = proc / str(pid)
    entry.mkdir()
    (entry / "comm").write_text(f"{comm}\n")
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt,
    # then utime stime cutime cstime (fields 14 to 17), then the rest.
    utime, stime, cutime, cstime = ticks
    head = f"{pid} ({comm}) S 1 1 1 0 -1 4194560 10 0 0 0"
    (entry / "stat").write_text(f"{head} {utime} {stime} {cutime} {cstime} 20 0 1 0\n")


def test_server_cpu_sums_the_postgres_processes_and_their_ended_children(
    tmp_path: Path,
) -> None:
    import os

    tick = os.sysconf("SC_CLK_TCK")
    _process(tmp_path, 10, "postgres", (100, 50, 30, 20))  # the postmaster: reaped backends
    _process(tmp_path, 11, "postgres", (7, 3, 0, 0))  # a backend
    _process(tmp_path, 12, "python3", (999, 999, 0, 0))  # not the server
    _process(tmp_path, 13, "my (odd) name", (999, 0, 0, 0))  # a name with spaces and ")"
    (tmp_path / "self").mkdir()
    target = Target("postgres", pg_url="postgresql://root@127.0.0.1:5432/test")
    assert server_cpu(target, tmp_path) == pytest.approx(210 / tick)
    assert server_cpu(Target("sqlite"), tmp_path) is None
    elsewhere = Target("postgres", pg_url="postgresql://root@db.example.org/test")
    assert server_cpu(elsewhere, tmp_path) is None
    assert server_cpu(target, tmp_path / "missing") is None


def test_a_server_is_local_by_loopback_name_or_socket() -> None:
    assert is_local_server("postgresql://root@127.0.0.1:5432/test")
    assert is_local_server("postgresql://root@localhost/test")
    assert is_local_server("postgresql://root@[::1]:5432/test")
    assert is_local_server("postgresql:///test")  # the default socket
    assert is_local_server("postgresql://root@%2Fvar%2Frun%2Fpostgresql/test")
    assert is_local_server("postgresql://root@/test?host=/run/postgresql")
    assert not is_local_server("postgresql://root@10.0.0.5/test")
    assert not is_local_server("postgresql://root@/test?host=db.example.org")


def test_server_cpu_is_summarised_only_when_every_run_measured_it() -> None:
    measured = [_workers_run("drain", 1.0, server_cpu_s=s) for s in (0.2, 0.3, 0.4)]
    assert summarise_workers(1, measured)["median_server_cpu_us_per_stage"] == pytest.approx(300.0)
    partly = [*measured[:2], _workers_run("drain", 1.0, server_cpu_s=None)]
    assert "median_server_cpu_us_per_stage" not in summarise_workers(1, partly)


def _run(rate: float, mode: str = "drain", **extra: Any) -> dict[str, Any]:
    """One repetition of a single-process workload, as ``measure.run_once`` gives it."""
    return {
        "mode": mode,
        "workflows": 1,
        "stages_executed": 100,
        "stages_per_s": rate,
        "us_per_stage": 1e6 / rate,
        "wall_s": 100 / rate,
        "cpu_us_per_stage": 700.0,
        "commits_per_stage": 1.0,
        "commits": 100,
        "processor_commits": 100,
        "reads": 0,
        "peak_rss_kib": 40960,
        "rss_before_kib": 30720,
        **extra,
    }


def test_single_process_summary_gives_the_median_server_cpu() -> None:
    def run(server: float | None) -> dict[str, Any]:
        return _run(1000.0, server_cpu_us_per_stage=server)

    summary = summarise("linear_100", [run(250.0), run(300.0), run(200.0)])
    assert summary["median_server_cpu_us_per_stage"] == 250.0
    assert "median_server_cpu_us_per_stage" not in summarise("linear_100", [run(None)])


def _suite_dump(backend: str, *rows: tuple[str, str, list[float]]) -> dict[str, Any]:
    env = {"backend": backend, "events": "on", "database": backend, "journal_mode": "WAL"}
    results = [summarise(name, [_run(r, mode) for r in rates]) for name, mode, rates in rows]
    return {"environment": env, "results": results, "workers": []}


def test_ab_rounds_flip_the_order_of_the_sides() -> None:
    assert [round_order(n) for n in (1, 2, 3, 4)] == [
        ("old", "new"),
        ("new", "old"),
        ("old", "new"),
        ("new", "old"),
    ]


def test_pooling_puts_every_repetition_of_a_row_together() -> None:
    first = _suite_dump("sqlite", ("linear_100", "drain", [100.0, 200.0]))
    first["results"].append({"workload": "agent_loop_20", "mode": "drain", "skipped": "no llm"})
    second = _suite_dump(
        "sqlite", ("linear_100", "service", [50.0]), ("linear_100", "drain", [300.0, 400.0, 500.0])
    )

    pooled = pool_dumps([first, second])

    rows = {(r["workload"], r["mode"]): r for r in pooled["results"]}
    assert list(rows) == [("linear_100", "drain"), ("linear_100", "service")]
    drain = rows[("linear_100", "drain")]
    assert drain["repeats"] == 5
    assert drain["median_stages_per_s"] == 300.0  # of 100, 200, 300, 400, 500
    assert drain["best_stages_per_s"] == 500.0
    assert rows[("linear_100", "service")]["repeats"] == 1
    assert pooled["environment"]["pooled_dumps"] == 2
    assert pooled["workers"] == []


def test_pooling_refuses_runs_of_different_databases() -> None:
    sqlite = _suite_dump("sqlite", ("linear_100", "drain", [100.0]))
    postgres = _suite_dump("postgres", ("linear_100", "drain", [100.0]))
    with pytest.raises(ValueError, match="different backend"):
        pool_dumps([sqlite, postgres])
    with pytest.raises(ValueError, match="nothing to pool"):
        pool_dumps([])


def test_instructions_are_read_from_callgrinds_summary_and_divided_per_stage() -> None:
    output = "==12== Events    : Ir\n==12== Collected : 996878753\n\n==12== I   refs: 996,878,753\n"
    assert collected(output) == 996_878_753
    assert per_stage(996_878_753, 838_540_945, 100) == 1_583_378
    with pytest.raises(ValueError, match="no instruction count"):
        collected("valgrind: command not found")
    with pytest.raises(ValueError, match="0 stage runs"):
        per_stage(2, 1, 0)


def test_ab_refuses_an_old_engine_that_is_not_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Else both sides would run this tree's engine and compare it with itself.
    with pytest.raises(SystemExit):
        ab_main(["--old-pythonpath", str(tmp_path), "--", "--only", "linear_100"])
    assert "no stabilize package there" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ab_main(["--", "--only", "linear_100"])
    assert "--old-python or --old-pythonpath" in capsys.readouterr().err


def test_instructions_refuse_an_engine_that_is_not_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        instructions_main(["--only", "linear_100", "--pythonpath", str(tmp_path)])
    assert "--pythonpath" in capsys.readouterr().err


def test_another_engine_goes_first_on_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "stabilize").mkdir()
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = env_with_engine(str(tmp_path))
    assert env["PYTHONPATH"].split(":") == [str(tmp_path), "/elsewhere"]
    monkeypatch.delenv("PYTHONPATH")
    assert env_with_engine(str(tmp_path))["PYTHONPATH"] == str(tmp_path)
