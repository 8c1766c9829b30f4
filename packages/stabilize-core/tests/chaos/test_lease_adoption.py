"""A running worker adopts the expired lease of a SIGKILLed one, without a restart.

Worker B starts before worker A dies, with ``recover_on_start=False``: nothing releases A's
lease early, so B can take the interrupted task only once the 2 s lease has expired.
"""

from __future__ import annotations

from collections import Counter

import pytest

SHORT_LEASE = "2"

pytestmark = pytest.mark.chaos


def test_running_worker_adopts_expired_lease_of_killed_worker(
    chaos_db, workers, make_chain, tmp_path
):
    wf = chaos_db.submit(make_chain([("a", "step"), ("b", "block"), ("c", "step")]))
    serve = ["serve", "--stop", str(chaos_db.stop), "--lease", SHORT_LEASE, "--events"]
    a = workers.spawn(chaos_db, *serve, name="worker-a")
    chaos_db.wait_until(
        lambda: any(e.ref == "b" for e in chaos_db.executions()), "worker A to start b", alive=[a]
    )

    ready = tmp_path / "worker-b.ready"
    b = workers.spawn(chaos_db, *serve, "--ready", str(ready), name="worker-b")
    chaos_db.wait_until(ready.exists, "worker B to run", alive=[a, b])
    a.kill()

    chaos_db.wait_until(
        lambda: any(e.ref == "b" and e.pid == b.pid for e in chaos_db.executions()),
        "worker B to adopt b once A's lease expired",
        alive=[b],
    )
    chaos_db.release.touch()
    chaos_db.wait_until(
        lambda: chaos_db.status(wf.id) == "SUCCEEDED", "the workflow to succeed", alive=[b]
    )
    chaos_db.stop.touch()
    assert b.wait_exit() == 0, b.output()

    log = chaos_db.executions()
    assert [(e.ref, e.pid) for e in log] == [
        ("a", a.pid),
        ("b", a.pid),
        ("b", b.pid),
        ("c", b.pid),
    ], b.output()
    assert len({e.key for e in log if e.ref == "b"}) == 1
    assert "recovered" not in b.stderr()  # expiry, not recovery, freed the task

    attempts = chaos_db.query("SELECT count(*) FROM dead_letters")
    assert attempts == [(0,)]
    assert chaos_db.query("SELECT count(*) FROM queue_messages") == [(0,)]
    done = chaos_db.store.retrieve(wf.id)
    assert {s.ref_id: s.outputs for s in done.stages} == {
        "a": {"a_pid": a.pid},
        "b": {"b_pid": b.pid},
        "c": {"c_pid": b.pid},
    }
    sequences = chaos_db.event_sequences(wf.id)
    assert sequences == list(range(1, len(sequences) + 1))
    assert chaos_db.query("SELECT event_seq FROM workflows WHERE id = ?", (wf.id,)) == [
        (len(sequences),)
    ]


def test_surviving_workers_adopt_every_task_of_a_killed_one(chaos_db, workers, make_chain):
    chain = [("gate", "block"), ("s2", "step"), ("s3", "step")]
    ids = [chaos_db.submit(make_chain(chain, name=f"wf{i}")).id for i in range(12)]
    serve = ["serve", "--stop", str(chaos_db.stop), "--lease", SHORT_LEASE, "--events"]
    procs = [workers.spawn(chaos_db, *serve, "--max-workers", "2", name=f"w{n}") for n in range(3)]
    pids = {p.pid for p in procs}
    # Until the release, only gates run and every one blocks: 2 per worker at most.
    chaos_db.wait_until(
        lambda: {e.pid for e in chaos_db.executions()} == pids,
        "every worker to hold a blocked gate",
        alive=procs,
    )
    victim, survivors = procs[0], procs[1:]
    victim.kill()
    interrupted = {e.key for e in chaos_db.executions() if e.pid == victim.pid}
    assert 1 <= len(interrupted) <= 2
    chaos_db.release.touch()

    def all_done() -> bool:
        rows = chaos_db.query("SELECT count(*) FROM workflows WHERE status = 'SUCCEEDED'")
        return bool(rows == [(len(ids),)])

    chaos_db.wait_until(all_done, "every workflow to succeed", alive=survivors)
    chaos_db.stop.touch()
    for proc in survivors:
        assert proc.wait_exit() == 0, proc.output()

    log = chaos_db.executions()
    runs = Counter(e.key for e in log)
    assert {k for k, n in runs.items() if n != 1} == interrupted
    for key in interrupted:
        by = [e.pid for e in log if e.key == key]
        assert by[0] == victim.pid
        assert len(by) == 2
        assert by[1] in {p.pid for p in survivors}
    assert Counter(e.ref for e in log) == {
        "gate": len(ids) + len(interrupted),
        "s2": len(ids),
        "s3": len(ids),
    }
    assert chaos_db.query("SELECT count(*) FROM queue_messages") == [(0,)]
    assert chaos_db.query("SELECT count(*) FROM dead_letters") == [(0,)]
    for wf_id in ids:
        sequences = chaos_db.event_sequences(wf_id)
        assert sequences == list(range(1, len(sequences) + 1)), wf_id
