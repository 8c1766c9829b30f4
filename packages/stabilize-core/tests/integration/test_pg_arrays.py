"""The binary arrays of the gathered writes read back as the values sent (PostgreSQL)."""

from __future__ import annotations

import pytest

from stabilize.backends.postgres._arrays import BigintArray, TextArray


# Only PostgreSQL reads these arrays.
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_text_and_bigint_arrays_round_trip(backend):
    texts: list[str | None] = ["", "plain", 'quo"te, {brace} \\ back', "é \u2028 😀", None]
    texts.append("x" * 5000)
    numbers: list[int | None] = [0, -1, 2**63 - 1, -(2**63), None, 1_795_916_173_713]
    pg = backend.backend()
    with pg.read() as tx:
        tx.cur.execute(
            "SELECT %b::text[], %b::bigint[], %b::text[], %b::bigint[]",
            (TextArray(texts), BigintArray(numbers), TextArray(), BigintArray()),
        )
        assert tx.cur.fetchone() == (texts, numbers, [], [])
