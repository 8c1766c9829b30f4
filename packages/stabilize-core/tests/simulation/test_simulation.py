"""The deterministic simulation of the engine (see sim_world.py for how a run goes).

A failure names its seed and the command that replays exactly that run.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from simulation.sim_checks import check_run, comparable
from simulation.sim_world import REPLAY, ErrorLog, Stats, World

if TYPE_CHECKING:
    from conftest import PgSchemas

pytestmark = pytest.mark.simulation
PG_RUNS = 6
"""Seeds run on PostgreSQL too (each on a fresh schema)."""


def simulate(
    seed: int,
    directory: Path,
    *,
    strict: bool = False,
    faults_in_tasks: bool = True,
    postgres: tuple[str, str] | None = None,
) -> World:
    """Run ``seed`` to its end and check every invariant; fail naming the seed."""
    world = World(
        seed, directory, strict=strict, faults_in_tasks=faults_in_tasks, postgres=postgres
    )
    errors = ErrorLog()
    engine_log = logging.getLogger("stabilize")
    engine_log.addHandler(errors)
    replay = REPLAY.format(seed=seed)
    try:
        try:
            world.run()
        except Exception as exc:
            raise AssertionError(
                f"simulation seed {seed} raised at tick {len(world.trace)} "
                f"({world.trace[-1:]}): {type(exc).__name__}: {exc}\nreplay: {replay}"
            ) from exc
        problems = check_run(world) + [f"engine logged: {m}" for m in errors.messages]
    finally:
        engine_log.removeHandler(errors)
    world.stats.ticks = len(world.trace)
    world.stats.known_bug_hits = len(world.known)
    runs = Counter((e.workflow_id, e.task_id, e.run, e.retry) for e in world.executions)
    world.stats.duplicates = sum(n - 1 for n in runs.values())
    if problems:
        shown = "\n  ".join(problems[:20])
        world.close()
        raise AssertionError(
            f"simulation seed {seed} broke {len(problems)} invariant(s):\n  {shown}\n"
            f"replay: {replay}"
        )
    return world


def test_simulated_run(sim_seed: int, tmp_path: Path, sim_totals: Stats) -> None:
    world = simulate(sim_seed, tmp_path)
    sim_totals.add(world.stats)
    world.close()


@pytest.mark.postgres
@pytest.mark.parametrize("seed", range(PG_RUNS))
def test_simulated_run_on_postgres(seed: int, tmp_path: Path, pg_schemas: PgSchemas) -> None:
    """Seeds run on PostgreSQL: its claims, fences and transient errors (a fresh schema each)."""
    world = simulate(seed, tmp_path, postgres=(pg_schemas.url, pg_schemas.create()))
    world.close()


def test_a_seed_replays_exactly(tmp_path: Path) -> None:
    first = simulate(7, tmp_path / "a")
    second = simulate(7, tmp_path / "b")
    try:
        assert first.trace == second.trace
        assert [e.key for e in first.executions] == [e.key for e in second.executions]
        for plan in first.plans:
            wf_id = plan.workflow.id
            assert comparable(first.stored(wf_id)) == comparable(second.stored(wf_id))
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    ("seed", "faults_in_tasks"),
    [
        pytest.param(37, False),
        pytest.param(14, False),
        pytest.param(24, True),
    ],
)
def test_known_engine_bugs_are_fixed(seed: int, faults_in_tasks: bool, tmp_path: Path) -> None:
    """Seeds that met a known bug, run with it counted as a violation (un-skip when fixed)."""
    simulate(seed, tmp_path, strict=True, faults_in_tasks=faults_in_tasks).close()
