"""The settings of a structured loop's check stage (see :mod:`stabilize.loops`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

LoopMode = Literal["until", "while", "next"]
"""``until``: check after the body, jump back while false; ``while``: check before the
body, skip to the exit once false; ``next``: the end of a while body, always go back."""

LOOP_MODES: tuple[LoopMode, ...] = ("until", "while", "next")


@dataclass
class LoopConfig:
    """How the ``loop`` task of a check stage decides (set by the loop builders).

    Attributes:
        mode: ``until``, ``while`` or ``next`` (see :data:`LoopMode`).
        condition: The expression evaluated against the check stage's task context.
        max_iterations: The most iterations; it is also added to the workflow's jump bound.
        target: Where the loop jumps: back to the body's entry (``until``), to the exit
            (``while``) or back to the guard (``next``).
        fail_when_exhausted: End TERMINAL when the bound is reached before the condition
            says to stop.
    """

    mode: LoopMode
    condition: str
    max_iterations: int
    target: str
    fail_when_exhausted: bool = False

    def __post_init__(self) -> None:
        if self.mode not in LOOP_MODES:
            raise ValueError(f"loop mode must be one of {', '.join(LOOP_MODES)}, not {self.mode!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "mode": self.mode,
            "condition": self.condition,
            "max_iterations": self.max_iterations,
            "target": self.target,
            "fail_when_exhausted": self.fail_when_exhausted,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopConfig:
        """Rebuild from :meth:`to_dict` output.

        Args:
            data: What :meth:`to_dict` returned.

        Returns:
            The configuration.

        Raises:
            KeyError: ``data`` lacks ``target``.
            ValueError: ``data`` names an unknown mode.
        """
        return cls(
            mode=cast("LoopMode", data.get("mode", "until")),
            condition=str(data.get("condition", "")),
            max_iterations=int(data.get("max_iterations", 1)),
            target=str(data["target"]),
            fail_when_exhausted=bool(data.get("fail_when_exhausted", False)),
        )
