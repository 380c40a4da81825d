"""KeyLimiter over a fake clock: rpm and tpm buckets, concurrency, OpenAI's headers."""

from datetime import UTC, datetime

import pytest

from multai.api_keys import ApiKey
from multai.rate_limits import KeyLimiter, openai_duration, retry_after_seconds


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_key(
    rpm: int | None = None, tpm: int | None = None, concurrency: int | None = None, name: str = "ci"
) -> ApiKey:
    return ApiKey(
        name=name,
        prefix="sk-multai-AbC1…",
        digest="0" * 64,
        models=(),
        max_priority=0,
        rpm=rpm,
        tpm=tpm,
        concurrency=concurrency,
        created_at=datetime.now(UTC),
        revoked=False,
    )


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (0.02, "20ms"),
        (1, "1s"),
        (59.618, "59.618s"),
        (360, "6m0s"),
        (61.5, "1m1.5s"),
        (3600, "1h0m0s"),
    ],
)
def test_openai_duration_format(seconds: float, expected: str) -> None:
    assert openai_duration(seconds) == expected


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    assert [retry_after_seconds(s) for s in (0, 0.2, 1.0, 29.001, 30.0000000001)] == [1, 1, 1, 30, 30]


def test_third_request_of_a_two_rpm_key_is_refused_until_refilled() -> None:
    clock = FakeClock()
    limiter = KeyLimiter(clock)
    key = make_key(rpm=2)
    first = limiter.admit(key)
    assert first.admitted and first.refusal is None
    assert first.headers == {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "30s",
    }
    clock.now += 0.5
    assert limiter.admit(key).admitted
    clock.now += 0.5
    refused = limiter.admit(key)
    assert not refused.admitted
    # 1 s after the first request the bucket holds 1/30 of a request; a whole one is 29 s away.
    assert refused.headers["Retry-After"] == "29"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"] == "59s"
    assert refused.refusal is not None and "requests per minute" in refused.refusal and "2" in refused.refusal
    assert "x-ratelimit-limit-tokens" not in refused.headers

    clock.now += 28.9
    assert not limiter.admit(key).admitted
    clock.now += 0.2
    assert limiter.admit(key).admitted
    assert not limiter.admit(key).admitted


def test_refusals_take_nothing_from_the_bucket() -> None:
    clock = FakeClock()
    limiter = KeyLimiter(clock)
    key = make_key(rpm=1)
    assert limiter.admit(key).admitted
    for _ in range(5):
        assert not limiter.admit(key).admitted
    clock.now += 60
    assert limiter.admit(key).admitted


def test_tokens_per_minute_refuse_once_charges_empty_the_bucket() -> None:
    clock = FakeClock()
    limiter = KeyLimiter(clock)
    key = make_key(tpm=600)
    admitted = limiter.admit(key)
    assert admitted.admitted
    assert admitted.headers == {
        "x-ratelimit-limit-tokens": "600",
        "x-ratelimit-remaining-tokens": "600",
        "x-ratelimit-reset-tokens": "0s",
    }
    limiter.charge_tokens("ci", 500)
    limiter.release("ci")
    assert limiter.admit(key).admitted  # 100 tokens left
    limiter.charge_tokens("ci", 700)  # overdrawn to -600
    limiter.release("ci")
    refused = limiter.admit(key)
    assert not refused.admitted
    assert refused.refusal is not None and "tokens per minute" in refused.refusal and "600" in refused.refusal
    # At 10 tokens a second, -600 is back above zero in just over 60 s and full in 120 s.
    assert refused.headers["Retry-After"] == "61"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.headers["x-ratelimit-reset-tokens"] == "2m0s"
    clock.now += 60
    assert not limiter.admit(key).admitted
    clock.now += 0.1
    assert limiter.admit(key).admitted


def test_concurrency_counts_requests_in_flight() -> None:
    limiter = KeyLimiter(FakeClock())
    key = make_key(concurrency=2)
    assert limiter.admit(key).admitted
    assert limiter.admit(key).admitted
    refused = limiter.admit(key)
    assert not refused.admitted
    assert refused.headers == {"Retry-After": "1"}
    assert refused.refusal is not None and "concurrent requests" in refused.refusal
    # Another key's requests are its own.
    assert limiter.admit(make_key(concurrency=2, name="other")).admitted
    limiter.release("ci")
    assert limiter.admit(key).admitted
    assert not limiter.admit(key).admitted


def test_refused_concurrency_takes_no_request() -> None:
    limiter = KeyLimiter(FakeClock())
    key = make_key(rpm=3, concurrency=1)
    assert limiter.admit(key).admitted
    assert not limiter.admit(key).admitted
    limiter.release("ci")
    assert limiter.admit(key).headers["x-ratelimit-remaining-requests"] == "1"


def test_a_key_without_limits_is_always_admitted_without_headers() -> None:
    limiter = KeyLimiter(FakeClock())
    key = make_key()
    for _ in range(100):
        admission = limiter.admit(key)
        assert admission.admitted and admission.headers == {}
