"""``stabilize demo``: a small parallel workflow on an embedded SQLite file, offline."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TextIO

from stabilize.events import emit_progress
from stabilize.events.bus import get_event_bus
from stabilize.models import StageExecution, Workflow, WorkflowStatus
from stabilize.models.event import Event
from stabilize.queue.processor import QueueProcessorConfig
from stabilize.tasks.result import TaskResult
from stabilize.workflow_engine import WorkflowEngine

TEXT = (
    "A workflow is a graph of stages. Stages run tasks. The engine runs stages in parallel "
    "where the graph allows, commits every transition with the message that continues it, "
    "and resumes after a crash without losing or repeating committed work."
)


def fetch(stage: StageExecution) -> TaskResult:
    """Pretend to download a document: publish its text."""
    emit_progress(stage, "fetched document", chars=len(TEXT))
    return TaskResult.success(outputs={"text": TEXT})


def count_words(stage: StageExecution) -> TaskResult:
    """Count the words of the fetched text."""
    time.sleep(0.05)  # make the parallel branches overlap visibly
    return TaskResult.success(outputs={"words": len(stage.context["text"].split())})


def top_letters(stage: StageExecution) -> TaskResult:
    """Find the most common letters."""
    time.sleep(0.05)
    letters = Counter(c for c in stage.context["text"].lower() if c.isalpha())
    return TaskResult.success(
        outputs={"top_letters": "".join(c for c, _ in letters.most_common(5))}
    )


def sentences(stage: StageExecution) -> TaskResult:
    """Count the sentences."""
    time.sleep(0.05)
    return TaskResult.success(outputs={"sentences": stage.context["text"].count(".")})


def summarize(stage: StageExecution) -> TaskResult:
    """Join the three analyses (their outputs arrive merged in the context)."""
    ctx = stage.context
    summary = (
        f"{ctx['words']} words, {ctx['sentences']} sentences, "
        f"most common letters: {ctx['top_letters']}"
    )
    return TaskResult.success(outputs={"summary": summary})


def build_workflow() -> Workflow:
    """Fetch -> (words, letters, sentences in parallel) -> summarize."""

    def stage(ref: str, requires: set[str] | None = None) -> StageExecution:
        return StageExecution.for_task(
            ref,
            ref,
            name=ref.replace("_", " ").title(),
            requisite_stage_ref_ids=requires or set(),
        )

    return Workflow.create(
        application="demo",
        name="Analyse a document",
        stages=[
            stage("fetch"),
            stage("count_words", {"fetch"}),
            stage("top_letters", {"fetch"}),
            stage("sentences", {"fetch"}),
            stage("summarize", {"count_words", "top_letters", "sentences"}),
        ],
    )


WIDTH = 100
"""The widest line the demo prints; longer ones are cut with an ellipsis."""

VALUE_WIDTH = 40
"""The widest output value the demo prints."""


def shorten(text: str, width: int) -> str:
    """``text``, cut to ``width`` characters with an ellipsis when it is longer."""
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def describe_outputs(outputs: dict[str, object]) -> str:
    """``key=value`` pairs, each value cut to :data:`VALUE_WIDTH` characters."""
    return ", ".join(f"{k}={shorten(repr(v), VALUE_WIDTH)}" for k, v in outputs.items())


def run_demo(db_path: str, workers: int, out: TextIO) -> int:
    """Run the demo workflow on ``db_path`` and print its progress to ``out``.

    Returns:
        0 when the workflow succeeded, 1 otherwise.
    """
    path = Path(db_path).expanduser().resolve()
    config = QueueProcessorConfig(max_workers=workers)
    with WorkflowEngine(f"sqlite:///{path}", config=config) as engine:
        for fn in (fetch, count_words, top_letters, sentences, summarize):
            engine.register(fn.__name__, fn)
        result = _run(engine, out)
    print(
        f"\nstate lives in {path} (SQLite; tables workflows, stages, queue_messages, events)",
        file=out,
    )
    print(f"inspect it with: sqlite3 {path} 'select ref_id, status from stages'", file=out)
    return 0 if result.status is WorkflowStatus.SUCCEEDED else 1


def _run(engine: WorkflowEngine, out: TextIO) -> Workflow:
    workflow = build_workflow()
    names = {s.id: s.ref_id for s in workflow.stages}
    started = time.monotonic()

    def show(event: Event) -> None:
        # state.changed rows carry the stored diff: they say nothing a reader can use here.
        if event.workflow_id != workflow.id or event.event_type == "state.changed":
            return
        elapsed = time.monotonic() - started
        if event.entity_type == "workflow":
            subject = workflow.name
        else:
            subject = names.get(event.entity_id) or names.get(
                str(event.data.get("stage_id", "")), event.entity_id
            )
        label = f"{event.event_type:<20} {subject}"
        if event.event_type == "custom.progress":
            label += f"  ({event.data.get('message')})"
        print(shorten(f"  {elapsed * 1000:7.1f} ms  {label}", WIDTH), file=out)

    unsubscribe = get_event_bus().subscribe(show, workflow.id)
    print(f"stabilize demo: workflow {workflow.id}", file=out)
    print("  fetch -> (count_words | top_letters | sentences) -> summarize", file=out)
    try:
        result = engine.run(workflow, timeout=60)
    finally:
        unsubscribe()
    print(f"\nworkflow {result.status.value}", file=out)
    for s in result.stages:
        line = f"  {s.ref_id:<12} {s.status.value:<10} {describe_outputs(s.outputs)}"
        print(shorten(line, WIDTH), file=out)
    failure = result.failure_summary()
    if failure:
        print(f"\n{failure}", file=out)
    summary = result.stage_by_ref_id("summarize").outputs.get("summary")
    if summary:
        print(f"\nsummary: {summary}", file=out)
    return result
