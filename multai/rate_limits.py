"""Per-key requests per minute, tokens per minute and concurrent requests, kept in one bridge's memory.

The bridge runs one asyncio loop, so nothing here locks; nothing blocks either, since a refusal answers at
once with OpenAI's rate-limit headers and Retry-After instead of waiting.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from multai.api_keys import ApiKey

SECONDS_PER_MINUTE = 60.0
# A refused client should wait at least this long, even when the bucket refills sooner.
MIN_RETRY_AFTER_SECONDS = 1


def openai_duration(seconds: float) -> str:
    """A duration as OpenAI's x-ratelimit-reset-* headers write it: "20ms", "59.618s", "6m0s", "1h0m0s"."""
    milliseconds = max(0, round(seconds * 1000))
    if milliseconds == 0:
        return "0s"
    if milliseconds < 1000:
        return f"{milliseconds}ms"
    minutes, rest = divmod(milliseconds, 60_000)
    hours, minutes = divmod(minutes, 60)
    text = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text


def retry_after_seconds(seconds: float) -> int:
    """Retry-After in whole seconds, rounded up, at least MIN_RETRY_AFTER_SECONDS."""
    # Rounding to milliseconds first keeps float noise such as 30.000000001 from adding a second.
    return max(MIN_RETRY_AFTER_SECONDS, math.ceil(round(seconds, 3)))


class TokenBucket:
    """Holds up to `capacity` and refills continuously at capacity per minute; may be overdrawn."""

    def __init__(self, capacity: int, now: float) -> None:
        self.capacity = capacity
        self._level = float(capacity)
        self._updated = now

    @property
    def refill_per_second(self) -> float:
        return self.capacity / SECONDS_PER_MINUTE

    def level(self, now: float) -> float:
        """What the bucket holds at now, below zero while overdrawn."""
        elapsed = max(0.0, now - self._updated)
        self._level = min(float(self.capacity), self._level + elapsed * self.refill_per_second)
        self._updated = now
        return self._level

    def take(self, amount: float, now: float) -> None:
        self._level = self.level(now) - amount

    def seconds_until(self, level: float, now: float) -> float:
        """How long until the bucket holds level; 0 when it already does."""
        return max(0.0, (level - self.level(now)) / self.refill_per_second)


@dataclass(frozen=True)
class Admission:
    """KeyLimiter's answer: whether the request may run, and the headers to send either way."""

    admitted: bool
    headers: dict[str, str] = field(default_factory=dict)
    # Which limit refused the request and its value, for the 429 error's message; None when admitted.
    refusal: str | None = None


class KeyLimiter:
    """The rate limits of every key that this bridge has served; `clock` is monotonic seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._requests: dict[str, TokenBucket] = {}
        self._tokens: dict[str, TokenBucket] = {}
        self._in_flight: dict[str, int] = {}

    def admit(self, key: ApiKey) -> Admission:
        """Starts a request for key (one request taken, one more in flight), or refuses it untouched.

        An admitted request must end with release(key.name), and charge_tokens once its usage is known.
        """
        now = self._clock()
        requests = self._bucket(self._requests, key.name, key.rpm, now)
        tokens = self._bucket(self._tokens, key.name, key.tpm, now)
        in_flight = self._in_flight.get(key.name, 0)
        # The limit that refuses the request and its value.
        refusal: tuple[str, int] | None = None
        wait = 0.0
        if key.concurrency is not None and in_flight >= key.concurrency:
            refusal = "concurrent requests", key.concurrency
        elif requests is not None and requests.level(now) < 1:
            refusal = "requests per minute", requests.capacity
            wait = requests.seconds_until(1, now)
        elif tokens is not None and tokens.level(now) <= 0:
            refusal = "tokens per minute", tokens.capacity
            # The bucket admits again once it holds anything at all; a millisecond past empty.
            wait = tokens.seconds_until(0, now) + 0.001
        if refusal is None:
            if requests is not None:
                requests.take(1, now)
            self._in_flight[key.name] = in_flight + 1
        headers = self._headers(requests, tokens, now)
        if refusal is None:
            return Admission(admitted=True, headers=headers)
        retry_after = retry_after_seconds(wait)
        headers["Retry-After"] = str(retry_after)
        limit, value = refusal
        message = (
            f"Rate limit reached for API key {key.name!r} on {limit}: limit {value}. "
            f"Please try again in {retry_after}s."
        )
        return Admission(admitted=False, headers=headers, refusal=message)

    def charge_tokens(self, key_name: str, tokens: int) -> None:
        """Takes a finished request's tokens from the key's tokens-per-minute bucket, even below zero."""
        bucket = self._tokens.get(key_name)
        if bucket is not None:
            bucket.take(tokens, self._clock())

    def release(self, key_name: str) -> None:
        """Ends one of the key's in-flight requests."""
        remaining = self._in_flight.get(key_name, 0) - 1
        if remaining > 0:
            self._in_flight[key_name] = remaining
        else:
            self._in_flight.pop(key_name, None)

    @staticmethod
    def _bucket(
        buckets: dict[str, TokenBucket], name: str, limit: int | None, now: float
    ) -> TokenBucket | None:
        if limit is None:
            return None
        if name not in buckets:
            buckets[name] = TokenBucket(limit, now)
        return buckets[name]

    @staticmethod
    def _headers(requests: TokenBucket | None, tokens: TokenBucket | None, now: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        for kind, bucket in (("requests", requests), ("tokens", tokens)):
            if bucket is None:
                continue
            level = bucket.level(now)
            headers[f"x-ratelimit-limit-{kind}"] = str(bucket.capacity)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(level)))
            headers[f"x-ratelimit-reset-{kind}"] = openai_duration(bucket.seconds_until(bucket.capacity, now))
        return headers
