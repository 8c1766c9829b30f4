"""The deterministic simulation: one test item per seed, the seeds from the command line.

``--sim-seed N`` replays exactly run N; ``--sim-runs N`` (with ``--sim-first M``) runs seeds
M..M+N-1; with neither, CI's short budget runs. The options are declared in
``tests/conftest.py``: pytest reads options only from the conftests it loads at startup.
At the end, the terminal summary adds up what the runs did and injected.
"""

from __future__ import annotations

import pytest

# tests/ is on sys.path (tests/conftest.py), so the helper modules beside this file are
# imported as simulation.<module> (which is also how mypy finds them).
from simulation.sim_world import Stats

CI_RUNS = 80
"""Seeds a run without options simulates (CI's budget)."""

TOTALS = pytest.StashKey[Stats]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[TOTALS] = Stats()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sim_seed" not in metafunc.fixturenames:
        return
    option = metafunc.config.getoption
    seed = option("--sim-seed", None)
    if seed is not None:
        seeds = [seed]
    else:
        runs = option("--sim-runs", None) or CI_RUNS
        first = option("--sim-first", None) or 0
        seeds = list(range(first, first + runs))
    metafunc.parametrize("sim_seed", seeds, ids=[f"seed{s}" for s in seeds])


@pytest.fixture
def sim_totals(request: pytest.FixtureRequest) -> Stats:
    """What every simulated run of this session did, added up (shown at the end)."""
    return request.config.stash[TOTALS]


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    totals = config.stash.get(TOTALS, None)
    if totals is None or not totals.runs:
        return
    terminalreporter.write_sep("-", "deterministic simulation")
    terminalreporter.write_line(
        f"{totals.runs} runs, {totals.workflows} workflows, {totals.ticks} scheduler steps, "
        f"{totals.executions} task executions ({totals.duplicates} re-runs of one run); "
        f"injected {totals.crashes} crashes, {totals.db_errors} database errors, "
        f"{totals.lease_expiries} lease expiries; {totals.cancels} cancellations, "
        f"{totals.signals} signals, {totals.pauses} pauses, {totals.fan_outs} fan-outs, "
        f"{totals.sub_workflows} sub-workflows; {totals.known_bug_hits} hits of known bugs"
    )


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite without fsync: a simulated crash loses memory, never the file (and it is faster)."""
    monkeypatch.setenv("STABILIZE_SQLITE_SYNCHRONOUS", "OFF")
