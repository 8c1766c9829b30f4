"""QueueProcessorConfig validation and the pure backoff_seconds."""

from __future__ import annotations

from typing import Any

import pytest

from stabilize.queue.processor.config import QueueProcessorConfig, backoff_seconds


def test_defaults() -> None:
    config = QueueProcessorConfig()
    assert config.poll_frequency_ms == 50
    assert config.max_workers == 10
    assert config.claim_batch_size == 64
    assert config.lease_duration_seconds is None
    assert config.transient_max_attempts == 10
    assert config.transient_backoff_base_seconds == 1.0
    assert config.transient_backoff_max_seconds == 60.0
    assert config.transient_jitter == 0.25
    assert config.default_poll_seconds == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_workers": 0}, "max_workers must be at least 1, got 0"),
        ({"poll_frequency_ms": 0}, "poll_frequency_ms must be at least 1, got 0"),
        ({"claim_batch_size": 0}, "claim_batch_size must be at least 1, got 0"),
        ({"transient_max_attempts": 0}, "transient_max_attempts must be at least 1"),
        ({"transient_jitter": -0.1}, r"transient_jitter must be in \[0, 1\)"),
        ({"transient_jitter": 1.0}, r"transient_jitter must be in \[0, 1\)"),
        ({"lease_duration_seconds": 0}, "lease_duration_seconds must be positive"),
        ({"lease_duration_seconds": -5.0}, "lease_duration_seconds must be positive"),
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QueueProcessorConfig(**kwargs)


def test_boundary_values_are_accepted() -> None:
    config = QueueProcessorConfig(
        max_workers=1,
        poll_frequency_ms=1,
        claim_batch_size=1,
        transient_max_attempts=1,
        transient_jitter=0,
        lease_duration_seconds=0.1,
    )
    assert config.max_workers == 1


def no_jitter(**kwargs: Any) -> QueueProcessorConfig:
    return QueueProcessorConfig(transient_jitter=0, **kwargs)


def test_backoff_is_exponential_from_the_base() -> None:
    config = no_jitter(transient_backoff_base_seconds=0.5, transient_backoff_max_seconds=1000)
    delays = [backoff_seconds(config, retry, 0.5) for retry in range(1, 6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_backoff_retry_zero_or_negative_uses_the_base() -> None:
    config = no_jitter(transient_backoff_base_seconds=3)
    assert backoff_seconds(config, 0, 0.5) == 3
    assert backoff_seconds(config, -2, 0.5) == 3


def test_backoff_is_capped() -> None:
    config = no_jitter(transient_backoff_base_seconds=1, transient_backoff_max_seconds=10)
    assert backoff_seconds(config, 4, 0.5) == 8
    assert backoff_seconds(config, 5, 0.5) == 10
    assert backoff_seconds(config, 50, 0.5) == 10


def test_without_jitter_the_draw_does_not_matter() -> None:
    config = no_jitter()
    assert {backoff_seconds(config, 3, d) for d in (0, 0.5, 0.999)} == {4.0}


def test_jitter_bounds() -> None:
    config = QueueProcessorConfig(
        transient_backoff_base_seconds=1, transient_backoff_max_seconds=60, transient_jitter=0.25
    )
    capped = 8.0  # retry 4
    assert backoff_seconds(config, 4, 0) == pytest.approx(capped * 0.75)
    assert backoff_seconds(config, 4, 0.5) == pytest.approx(capped)
    high = backoff_seconds(config, 4, 0.999)
    assert high == pytest.approx(capped * (1 + 0.25 * 0.998))
    assert capped < high < capped * 1.25


def test_jitter_applies_after_the_cap() -> None:
    config = QueueProcessorConfig(
        transient_backoff_base_seconds=1, transient_backoff_max_seconds=10, transient_jitter=0.5
    )
    assert backoff_seconds(config, 20, 0) == pytest.approx(5.0)
    assert backoff_seconds(config, 20, 0.999) < 15.0


def test_backoff_is_a_float_and_never_negative() -> None:
    config = QueueProcessorConfig(transient_backoff_base_seconds=0, transient_jitter=0.9)
    value = backoff_seconds(config, 1, 0)
    assert isinstance(value, float)
    assert value == 0.0
