"""``python -m examples.research_analyst [--chaos] [--model M --base-url URL] ...``"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from examples.research_analyst.run import QUESTION, main


def endpoint(args: argparse.Namespace) -> tuple[str | None, str | None, str]:
    """The model to use: the flags, else OPENAI_MODEL / OLLAMA_MODEL and their base URLs."""
    if args.model:
        return args.model, args.base_url, args.api
    if os.environ.get("OPENAI_MODEL"):
        return os.environ["OPENAI_MODEL"], os.environ.get("OPENAI_BASE_URL"), "openai"
    if os.environ.get("OLLAMA_MODEL"):
        return os.environ["OLLAMA_MODEL"], os.environ.get("OLLAMA_HOST"), "ollama"
    return None, None, args.api


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.research_analyst")
    parser.add_argument("--db-url", default="sqlite:///research_analyst.db")
    parser.add_argument("--workdir", type=Path, default=Path("research_analyst_run"))
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--chaos", action="store_true", help="SIGKILL a worker mid-run")
    parser.add_argument("--wait-for-human", action="store_true", help="do not auto-approve")
    parser.add_argument("--model", help="a real model (default: the offline scripted one)")
    parser.add_argument("--base-url", help="its endpoint (default: the API's usual one)")
    parser.add_argument("--api", choices=["openai", "ollama"], default="openai")
    args = parser.parse_args(argv)
    model, base_url, api = endpoint(args)
    print(f"model: {model or 'scripted (offline)'}" + (f" at {base_url}" if base_url else ""))
    outcome = main(
        args.db_url,
        workdir=args.workdir,
        question=args.question,
        chaos=args.chaos,
        auto_approve=not args.wait_for_human,
        model=model,
        base_url=base_url,
        api=api,
    )
    if outcome.report.exists():
        print(outcome.report.read_text(encoding="utf-8"))
    ok = outcome.workflow.status.value == "SUCCEEDED"
    return 0 if ok and (outcome.verdict is None or outcome.verdict.ok) else 1


if __name__ == "__main__":
    sys.exit(cli())
