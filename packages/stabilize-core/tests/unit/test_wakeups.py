"""LocalWakeups: idle workers of one database, woken by commits of this process."""

from __future__ import annotations

import threading

from stabilize.backends._wakeups import LocalWakeups


def test_a_wait_times_out_without_a_wake() -> None:
    wakeups = LocalWakeups()
    wakeups.wait(0)  # a thread's first wait returns at once: it has seen no count yet
    assert wakeups.wait(0.01) is False


def test_a_wake_while_the_worker_was_busy_is_not_lost() -> None:
    wakeups = LocalWakeups()
    wakeups.wait(0)
    wakeups.wake()  # between two waits of this thread
    assert wakeups.wait(60) is True
    assert wakeups.wait(0.01) is False


def test_a_wake_ends_a_wait_of_another_thread() -> None:
    wakeups = LocalWakeups()
    started, result = threading.Event(), []

    def waiter() -> None:
        wakeups.wait(0)
        started.set()
        result.append(wakeups.wait(60))

    thread = threading.Thread(target=waiter)
    thread.start()
    started.wait(10)
    wakeups.wake()
    thread.join(10)
    assert result == [True]


def test_a_set_stop_event_returns_at_once() -> None:
    wakeups = LocalWakeups()
    wakeups.wait(0)
    stop = threading.Event()
    stop.set()
    assert wakeups.wait(60, stop) is False
