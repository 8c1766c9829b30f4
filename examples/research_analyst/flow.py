"""The research analyst's workflow: its stages and the tasks they run.

                ┌── researcher_0 (ReAct + tools) ─┐
  plan ─────────┼── researcher_1 (ReAct + tools) ─┤  N_OF_M 2 of 3, findings collected
(planner)  ▲    └── researcher_2 (ReAct + tools) ─┘
           │                                      synthesize
           │                          ┌── review_a ─┐   │
           │                          └── review_b ─┘ first verdict (DISCRIMINATOR)
           └──── jump_to("plan") while confidence is low ── router
                                                           │ accept
                                            approve (human) ── report (sub-workflow)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from examples.research_analyst.model import PLANNER, RESEARCHER, REVIEWER, SYNTHESIZER

from stabilize import (
    JoinType,
    StageExecution,
    StragglerPolicy,
    SubWorkflowTask,
    Task,
    TaskResult,
    Workflow,
    WorkflowEngine,
    sub_workflow_config,
)
from stabilize.hitl import ApprovalTask
from stabilize.llm import AgentLoopTask, LLMClient, LLMTask, ToolRegistry

RESEARCHERS = ("researcher_0", "researcher_1", "researcher_2")


class _NoAliases:
    """Registered under its own name only, not as another ``llm``/``chat``/``agent``."""

    @property
    def aliases(self) -> list[str]:
        return []


def _round(stage: StageExecution) -> int:
    return int(stage.context.get("round", 1))


class Planner(_NoAliases, LLMTask):
    """Splits the question into three sub-questions (refined with a reviewer's feedback)."""

    def execute(self, stage: StageExecution) -> TaskResult:
        question, feedback = stage.context["question"], stage.context.get("feedback")
        prompt = f"Split this question into three sub-questions, one per line:\n{question}"
        if feedback:
            prompt += f"\nFeedback: {feedback}\n(round {_round(stage)}: address the feedback)"
        stage.context.update(system=PLANNER, prompt=prompt, output_key="plan")
        result = super().execute(stage)
        if result.status.is_successful:
            lines = [
                re.sub(r"^[\s\d.)*-]+", "", x).strip() for x in result.outputs["plan"].split("\n")
            ]
            questions = [x for x in lines if x][:3]
            questions += [question] * (3 - len(questions))
            result.outputs.update(subquestions=questions, round=_round(stage))
        return result


class Researcher(_NoAliases, AgentLoopTask):
    """One tool-using agent: answers its sub-question with web_search and lookup_statistic."""

    def execute(self, stage: StageExecution) -> TaskResult:
        question = stage.context["subquestions"][int(stage.context["index"])]
        prompt = f"{question}\nUse the tools, then answer in two sentences with numbers."
        stage.context.update(system=RESEARCHER, prompt=prompt, output_key="finding")
        # A loop back to the planner resets this stage: the agent starts a new conversation
        # (its checkpoint is its task's state, which the reset empties), and its step
        # numbers, hence its tools' idempotency keys, go on from the last round's.
        return super().execute(stage)


class Synthesizer(_NoAliases, LLMTask):
    """Writes a draft from the findings gathered by the quorum join."""

    def execute(self, stage: StageExecution) -> TaskResult:
        findings = stage.context.get("finding") or []
        if isinstance(findings, str):
            findings = [findings]
        prompt = (
            f"Write a brief (round {_round(stage)}).\nQuestion: {stage.context['question']}\n"
            "Findings:\n" + "\n".join(findings)
        )
        stage.context.update(system=SYNTHESIZER, prompt=prompt, output_key="draft")
        result = super().execute(stage)
        if result.status.is_successful:
            result.outputs["findings_used"] = len(findings)
        return result


class Reviewer(_NoAliases, LLMTask):
    """Rates the draft; its last line is ``confidence: <0..1>``."""

    def execute(self, stage: StageExecution) -> TaskResult:
        prompt = (
            f"Review this draft as {stage.ref_id} (round {_round(stage)}). "
            "End with 'confidence: <0 to 1>'.\n"
            f"{stage.context['draft']}"
        )
        stage.context.update(system=REVIEWER, prompt=prompt, output_key="verdict")
        result = super().execute(stage)
        if result.status.is_successful:
            result.outputs["reviewer"] = stage.ref_id
        return result


class Router(Task):
    """Accepts the draft, or sends the planner back to work while confidence is low."""

    def execute(self, stage: StageExecution) -> TaskResult:
        verdict = str(stage.context.get("verdict", ""))
        found = re.search(r"confidence:\s*([01](?:\.\d+)?)", verdict, re.IGNORECASE)
        confidence = float(found.group(1)) if found else 0.0
        current = _round(stage)
        if confidence < stage.context["min_confidence"] and current < stage.context["max_rounds"]:
            feedback = verdict.split("\n")[0]
            return TaskResult.jump_to("plan", context={"feedback": feedback, "round": current + 1})
        return TaskResult.success(
            outputs={
                "confidence": confidence,
                "rounds": current,
                "accepted_draft": stage.context["draft"],
            }
        )


class ReportWriter(SubWorkflowTask):
    """Writes the accepted report to a file, in a child workflow of its own."""

    def execute(self, stage: StageExecution) -> TaskResult:
        text = f"# {stage.context['question']}\n\n{stage.context['accepted_draft']}\n"
        child = [StageExecution.for_task("write", "write_file")]
        context = {"path": stage.context["report_path"], "text": text}
        stage.context["_sub_workflow_config"] = sub_workflow_config(
            "write-report", child, context=context
        )
        stage.context["_sub_workflow_poll_seconds"] = 0.05
        return super().execute(stage)


def write_file(stage: StageExecution) -> dict[str, Any]:
    path = Path(stage.context["path"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(stage.context["text"], encoding="utf-8")
    os.replace(tmp, path)  # a re-run after a crash rewrites the same file whole
    return {"written": str(path), "bytes": path.stat().st_size}


def register(engine: WorkflowEngine, client: LLMClient, tools: ToolRegistry) -> None:
    """Register the analyst's tasks on an engine (every worker process does the same)."""
    engine.register("planner", Planner(client=client))
    engine.register("researcher", Researcher(client=client, tools=tools))
    engine.register("synthesizer", Synthesizer(client=client))
    engine.register("reviewer", Reviewer(client=client))
    engine.register("router", Router())
    engine.register("approval", ApprovalTask())
    engine.register("report", ReportWriter())
    engine.register("write_file", write_file)


def build(question: str, report_path: Path, max_rounds: int = 2) -> Workflow:
    """The workflow for one question."""

    def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
        return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires or set(), **flow)

    researchers = [
        stage(ref, "researcher", {"plan"}, context={"index": i, "max_iterations": 5})
        for i, ref in enumerate(RESEARCHERS)
    ]
    stages = [
        stage("plan", "planner"),
        *researchers,
        stage(
            "synthesize",
            "synthesizer",
            set(RESEARCHERS),
            join_type=JoinType.N_OF_M,
            join_threshold=2,
            straggler_policy=StragglerPolicy.CANCEL,
            output_reducers={"finding": "collect"},
        ),
        stage("review_a", "reviewer", {"synthesize"}),
        stage("review_b", "reviewer", {"synthesize"}),
        stage(
            "router",
            "router",
            {"review_a", "review_b"},
            join_type=JoinType.DISCRIMINATOR,
            straggler_policy=StragglerPolicy.CANCEL,
        ),
        stage("approve", "approval", {"router"}),
        stage("report", "report", {"approve"}),
    ]
    context = {
        "question": question,
        "report_path": str(report_path),
        "min_confidence": 0.85,
        "max_rounds": max_rounds,
        "_max_jumps": max_rounds,
    }
    return Workflow.create("research-analyst", "research analyst", stages, context=context)
