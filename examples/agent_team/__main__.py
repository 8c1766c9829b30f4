"""``python -m examples.agent_team [--chaos] [--wait-for-human] [--model M ...]``"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from examples.agent_team.chaos import run_chaos
from examples.agent_team.team import client_for, main


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.agent_team")
    parser.add_argument("--db-url", default="sqlite:///agent_team.db")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("agent_team_project"),
        help="the project folder (--chaos: the project goes in its project/, with the ledger)",
    )
    parser.add_argument("--chaos", action="store_true", help="SIGKILL a worker mid-run")
    parser.add_argument("--wait-for-human", action="store_true", help="do not auto-approve")
    parser.add_argument("--model", help="a real model (default: the offline scripted one)")
    parser.add_argument("--base-url")
    parser.add_argument("--api", choices=["openai", "ollama"], default="openai")
    args = parser.parse_args(argv)
    if args.chaos:
        outcome = run_chaos(
            args.db_url, args.workdir, model=args.model, base_url=args.base_url, api=args.api
        )
        wf = outcome.workflow
        ok = outcome.verdict.ok
    else:
        live = client_for(args.model, args.base_url, args.api) if args.model else None
        wf = main(args.db_url, live, workdir=args.workdir, auto_approve=not args.wait_for_human)
        ok = True
    for s in wf.stages:
        print(f"{s.ref_id:<10} {s.status.value:<10} {s.outputs.get('stdout', '')[-80:]}")
    return 0 if ok and wf.status.value in ("SUCCEEDED", "RUNNING") else 1


if __name__ == "__main__":
    sys.exit(cli())
