"""Dynamic routing: a classifier's output, computed at run time, chooses the branch (an OR
split whose conditions read it); the branch not taken is skipped and the OR join waits
only for the live one.

             ┌─[kind == 'refund']── refund ──┐
 classify ───┤                               ├── close (OR join)
             └─[kind == 'question']─ answer ─┘
"""

from __future__ import annotations

from stabilize import JoinType, SplitType, StageExecution, Workflow, WorkflowEngine


def classify(stage: StageExecution) -> dict[str, str]:
    text = stage.context["ticket"].lower()
    return {"kind": "refund" if "money back" in text or "refund" in text else "question"}


def main(db_url: str, ticket: str = "I want my money back") -> Workflow:
    with WorkflowEngine(db_url) as engine:
        engine.register("classify", classify)
        engine.register("refund", lambda s: {"handled_by": "refunds"})
        engine.register("answer", lambda s: {"handled_by": "support"})
        engine.register("close", lambda s: {"closed": s.context["handled_by"]})
        stages = [
            StageExecution.for_task(
                "classify",
                "classify",
                split_type=SplitType.OR,
                split_conditions={"refund": "kind == 'refund'", "answer": "kind == 'question'"},
            ),
            StageExecution.for_task("refund", "refund", requisite_stage_ref_ids={"classify"}),
            StageExecution.for_task("answer", "answer", requisite_stage_ref_ids={"classify"}),
            StageExecution.for_task(
                "close",
                "close",
                requisite_stage_ref_ids={"refund", "answer"},
                join_type=JoinType.OR,
            ),
        ]
        workflow = Workflow.create("examples", "routing", stages, context={"ticket": ticket})
        return engine.run(workflow, timeout=30)


if __name__ == "__main__":
    for text in ("I want my money back", "How do I reset my password?"):
        wf = main("sqlite:///examples_demo.db", text)
        print(text, "->", wf.stage_by_ref_id("close").outputs)
