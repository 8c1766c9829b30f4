"""WorkflowStatus: the flags every transition relies on."""

from __future__ import annotations

from enum import StrEnum

import pytest

from stabilize.models.stage import JoinType, SplitType, StragglerPolicy
from stabilize.models.status import WorkflowStatus, as_member

S = WorkflowStatus

# status: (is_complete, is_halt, is_successful, is_failure, is_skipped)
FLAGS: dict[WorkflowStatus, tuple[bool, bool, bool, bool, bool]] = {
    S.NOT_STARTED: (False, False, False, False, False),
    S.RUNNING: (False, False, False, False, False),
    S.PAUSED: (False, False, False, False, False),
    S.SUSPENDED: (False, False, False, False, False),
    S.SUCCEEDED: (True, False, True, False, False),
    S.FAILED_CONTINUE: (True, False, False, True, False),
    S.TERMINAL: (True, True, False, True, False),
    S.CANCELED: (True, True, False, False, False),
    S.REDIRECT: (False, False, False, False, False),
    S.STOPPED: (True, True, False, True, False),
    S.SKIPPED: (True, False, True, False, True),
    S.BUFFERED: (False, False, False, False, False),
}


def test_flag_table_covers_every_status() -> None:
    assert set(FLAGS) == set(WorkflowStatus)


@pytest.mark.parametrize("status", list(WorkflowStatus), ids=str)
def test_flags(status: WorkflowStatus) -> None:
    complete, halt, successful, failure, skipped = FLAGS[status]
    assert status.is_complete is complete
    assert status.is_halt is halt
    assert status.is_successful is successful
    assert status.is_failure is failure
    assert status.is_skipped is skipped


def test_canceled_halts_but_is_not_a_failure() -> None:
    assert S.CANCELED.is_halt
    assert not S.CANCELED.is_failure


def test_failed_continue_is_a_failure_that_does_not_halt() -> None:
    assert S.FAILED_CONTINUE.is_failure
    assert not S.FAILED_CONTINUE.is_halt
    assert S.FAILED_CONTINUE.is_complete


@pytest.mark.parametrize("status", list(WorkflowStatus), ids=str)
def test_str_and_value_are_the_name(status: WorkflowStatus) -> None:
    assert str(status) == status.name
    assert status.value == status.name
    assert f"{status}" == status.name


def test_parses_from_its_string_and_compares_equal_to_it() -> None:
    assert WorkflowStatus("TERMINAL") is S.TERMINAL
    assert S.RUNNING == "RUNNING"
    with pytest.raises(ValueError, match="BOGUS"):
        WorkflowStatus("BOGUS")


@pytest.mark.parametrize("enum", [WorkflowStatus, JoinType, SplitType, StragglerPolicy])
def test_as_member_gives_what_the_enum_gives(enum: type[StrEnum]) -> None:
    for member in enum:
        assert as_member(enum, member) is member
        assert as_member(enum, member.value) is member
        assert as_member(enum, str(member.value)) is enum(member.value)


@pytest.mark.parametrize("bad", ["NOPE", "running", None, 3, ["RUNNING"]])
def test_as_member_refuses_what_the_enum_refuses_with_its_error(bad: object) -> None:
    with pytest.raises(ValueError, match="is not a valid WorkflowStatus") as ours:
        as_member(WorkflowStatus, bad)
    with pytest.raises(ValueError, match="is not a valid WorkflowStatus") as theirs:
        WorkflowStatus(bad)  # type: ignore[arg-type]
    assert str(ours.value) == str(theirs.value)
