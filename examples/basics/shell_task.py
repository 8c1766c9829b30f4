"""ShellTask: one stage's output feeds the next as a placeholder (always passed as data)
and through the environment.

version ── build
"""

from __future__ import annotations

from stabilize import ShellTask, StageExecution, Workflow, WorkflowEngine


def main(db_url: str) -> Workflow:
    with WorkflowEngine(db_url) as engine:
        engine.register("shell", ShellTask)
        version = StageExecution.for_task(
            "version", "shell", context={"command": "echo 1.4.2", "timeout": 10}
        )
        build = StageExecution.for_task(
            "build",
            "shell",
            requisite_stage_ref_ids={"version"},
            context={
                # {stdout} is version's output, quoted: a value like "1; rm -rf ~" stays text.
                "command": 'echo "building {stdout} for $TARGET"',
                "env": {"TARGET": "linux-amd64"},
                "timeout": 10,
            },
        )
        return engine.run(Workflow.create("examples", "shell", [version, build]), timeout=30)


if __name__ == "__main__":
    wf = main("sqlite:///examples_demo.db")
    print(wf.status, wf.stage_by_ref_id("build").outputs["stdout"])
