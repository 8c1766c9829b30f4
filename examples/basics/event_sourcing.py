"""Event sourcing and time travel: every transition is in the log, and the state of any
stage at any point is rebuilt from the log alone, without running a task again.

quote ── discount ── invoice
"""

from __future__ import annotations

from typing import Any

from stabilize import StageExecution, Workflow, WorkflowEngine
from stabilize.events import EventReplayer


def main(db_url: str) -> dict[str, Any]:
    with WorkflowEngine(db_url) as engine:
        engine.register("quote", lambda s: {"price": 100})
        engine.register("discount", lambda s: {"price": s.context["price"] * 0.9})
        engine.register("invoice", lambda s: {"total": round(s.context["price"], 2)})
        stages = [
            StageExecution.for_task("quote", "quote"),
            StageExecution.for_task("discount", "discount", requisite_stage_ref_ids={"quote"}),
            StageExecution.for_task("invoice", "invoice", requisite_stage_ref_ids={"discount"}),
        ]
        wf = engine.run(Workflow.create("examples", "event sourcing", stages), timeout=30)

        log = engine.backend.own_event_store()
        replayer = EventReplayer(log)
        events = log.get_events(wf.id)
        last = events[-1].sequence
        # The first point at which "discount" had succeeded, found by walking the log.
        done_at = next(
            e.sequence
            for e in events
            if replayer.time_travel_query(wf.id, "discount", e.sequence)["status"] == "SUCCEEDED"
        )
        return {
            "workflow": wf,
            "event_types": [e.event_type for e in events],
            "rebuilt_equals_stored": replayer.rebuild_workflow_state(wf.id).to_dict()
            == engine.retrieve(wf.id).to_dict(),
            "discount_before": replayer.time_travel_query(wf.id, "discount", 1)["status"],
            "discount_done_at": done_at,
            "invoice_at_that_point": replayer.time_travel_query(wf.id, "invoice", done_at)[
                "status"
            ],
            "invoice_at_the_end": replayer.time_travel_query(wf.id, "invoice", last)["outputs"],
        }


if __name__ == "__main__":
    for key, value in main("sqlite:///examples_demo.db").items():
        print(f"{key}: {value.status if key == 'workflow' else value}")
