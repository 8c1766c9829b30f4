"""Verifiers (stabilize/verification.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stabilize import (
    CallableVerifier,
    OutputVerifier,
    StageExecution,
    Verifier,
    VerifyResult,
    VerifyStatus,
    get_verifier,
    register_verifier,
    verifier,
)
from stabilize import verification as module
from stabilize.models import WorkflowStatus


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    saved = dict(module._verifiers)
    module._verifiers.clear()
    yield
    module._verifiers.clear()
    module._verifiers.update(saved)


def stage(**outputs: object) -> StageExecution:
    return StageExecution(ref_id="s", name="s", outputs=dict(outputs))


def test_output_verifier_names_missing_keys_and_wrong_types() -> None:
    check = OutputVerifier(required_keys=["url", "code"], type_checks={"code": int})
    missing = check.verify(stage(url="x"))
    assert missing.status is VerifyStatus.FAILED
    assert missing.message == "missing required outputs: code"
    assert missing.details == {"missing_keys": ["code"]}
    wrong = check.verify(stage(url="x", code="200"))
    assert wrong.message == "type errors: code: expected int, got str"
    assert check.verify(stage(url="x", code=200)).is_ok


def test_results_map_to_task_results() -> None:
    assert VerifyResult.ok().to_task_result({"a": 1}).outputs == {"a": 1}
    assert VerifyResult.retry().to_task_result().status is WorkflowStatus.RUNNING
    assert VerifyResult.skipped().to_task_result().status is WorkflowStatus.SKIPPED
    failed = VerifyResult.failed("bad").to_task_result()
    assert failed.status is WorkflowStatus.TERMINAL
    assert failed.error == "verification failed: bad"
    assert VerifyResult.retry().is_retry
    assert not VerifyResult.retry().is_terminal
    assert VerifyResult.failed("x").is_terminal


def test_register_get_and_decorate() -> None:
    @verifier
    def has_url(s: StageExecution) -> VerifyResult:
        return VerifyResult.ok() if s.outputs.get("url") else VerifyResult.failed("no url")

    @verifier("named")
    def other(s: StageExecution) -> VerifyResult:
        return VerifyResult.skipped()

    assert get_verifier("has_url").verify(stage(url="u")).is_ok
    assert get_verifier("named").verify(stage()).status is VerifyStatus.SKIPPED
    assert has_url(stage()).is_failed  # the function is left as it was
    made = register_verifier("outputs", OutputVerifier(["a"]))
    assert get_verifier("outputs") is made
    assert isinstance(made, Verifier)
    wrapped = CallableVerifier(has_url, max_retries=5, retry_delay=0.5)
    assert (wrapped.max_retries, wrapped.retry_delay_seconds) == (5, 0.5)


def test_refusals_name_what_is_wrong() -> None:
    with pytest.raises(KeyError, match=r"no verifier registered as 'nope' \(registered: none\)"):
        get_verifier("nope")
    with pytest.raises(ValueError, match="non-empty string"):
        register_verifier("", OutputVerifier())
    with pytest.raises(TypeError, match="must be a Verifier or a function, not int"):
        register_verifier("n", 3)  # type: ignore[arg-type]
    bad = CallableVerifier(lambda s: True)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="returned bool, expected a VerifyResult"):
        bad.verify(stage())
    assert module._verifiers == {}
