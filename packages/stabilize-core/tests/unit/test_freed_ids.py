"""Which freed id of an acknowledged message a new message of the transaction takes."""

from __future__ import annotations

from stabilize.backends._freed import FreedIds


def freed(*ids: tuple[str, int]) -> FreedIds:
    out = FreedIds()
    for workflow_id, msg_id in ids:
        out.free(workflow_id, msg_id, 7)
    return out


def taken(ids: FreedIds, *workflows: str) -> list[int | None]:
    return [f[0] if (f := ids.take(w)) is not None else None for w in workflows]


def test_an_id_of_the_same_workflow_is_taken_first() -> None:
    ids = freed(("a", 3), ("b", 5))
    assert taken(ids, "b", "b") == [5, None]  # 3 is below the id just given
    assert ids  # 3 is left


def test_without_one_of_its_workflow_a_message_takes_any_id_above() -> None:
    ids = freed(("a", 3), ("a", 4))
    assert taken(ids, "c", "c", "c") == [3, 4, None]
    assert not ids


def test_ids_given_in_one_transaction_increase() -> None:
    ids = freed(("a", 9), ("b", 2), ("a", 4))
    # a: the lowest of its ids (4); b's 2 is below it, so b takes a's 9; nothing is left
    # above 9 for the third message, which gets a new id.
    assert taken(ids, "a", "b", "a") == [4, 9, None]


def test_a_new_id_raises_the_floor_above_every_freed_one() -> None:
    ids = freed(("a", 3))
    ids.given(10)
    assert taken(ids, "a") == [None]


def test_the_token_of_a_freed_id_is_kept() -> None:
    ids = FreedIds()
    ids.free("a", 3, 41)
    ids.free("a", 2, 40)
    assert ids.take("a") == (2, 40)
    assert ids.take("a") == (3, 41)
