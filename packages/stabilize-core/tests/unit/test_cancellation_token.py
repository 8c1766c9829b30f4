"""The cancellation token a running task holds: its flag, and waiting on it."""

from __future__ import annotations

import threading
import time

from stabilize.cancellation import CancellationToken


def test_a_new_token_is_not_cancelled_and_a_wait_times_out() -> None:
    token = CancellationToken()
    assert not token.is_cancelled
    assert token.wait(0.01) is False
    assert not token.is_cancelled


def test_a_token_cancelled_before_the_wait_returns_at_once() -> None:
    token = CancellationToken()
    token.cancel()
    assert token.is_cancelled
    started = time.monotonic()
    assert token.wait(30) is True
    assert time.monotonic() - started < 5
    token.cancel()  # twice is harmless
    assert token.wait(0) is True


def test_cancel_wakes_every_waiter_blocked_without_a_timeout() -> None:
    token = CancellationToken()
    results: list[bool] = []
    waiting = threading.Barrier(4)

    def wait() -> None:
        waiting.wait()
        results.append(token.wait())

    threads = [threading.Thread(target=wait, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    waiting.wait()
    time.sleep(0.02)  # let them block
    token.cancel()
    for thread in threads:
        thread.join(10)
    assert results == [True, True, True]


def test_a_cancel_racing_the_first_wait_is_never_lost() -> None:
    # The event a wait blocks on is made by the first wait: a cancel that lands while it
    # is being made must still wake it (else the wait below runs out: False).
    for _ in range(300):
        token = CancellationToken()
        outcome: list[bool] = []
        waiter = threading.Thread(target=lambda t=token, out=outcome: out.append(t.wait(10)))
        waiter.start()
        token.cancel()
        waiter.join(15)
        assert outcome == [True]
