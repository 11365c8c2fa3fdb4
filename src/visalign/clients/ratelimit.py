"""An asyncio token-bucket rate limiter that reserves slots in arrival order."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """Allow ``rate`` acquisitions per second on average, with bursts of up to ``burst``.

    Each :meth:`acquire` takes a token, borrowing from the future when the bucket is empty and sleeping
    until that token would exist. Waiters are served first come, first served, and ``n`` acquisitions from
    an empty bucket take ``(n - 1) / rate`` seconds. A :meth:`pause` holds back every waiter, those already
    queued included. The limiter holds no asyncio primitives, so one instance can be shared by coroutines of
    successive event loops.

    Args:
        rate: tokens per second (must be > 0).
        burst: bucket capacity; 1 spaces requests evenly.
    """

    def __init__(self, rate: float, burst: float = 1.0) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = self.burst
        self._updated = time.monotonic()
        self._paused_until = 0.0  # time.monotonic() when the last pause ends
        self._shift = 0.0  # total seconds pauses have moved reserved slots back; waiters watch it grow

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, burst={self.burst})"

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self) -> None:
        """Wait until a token is available and take it (later still if a :meth:`pause` comes meanwhile)."""
        self._refill(time.monotonic())
        self._tokens -= 1.0
        wait, shift = -self._tokens / self.rate, self._shift
        try:
            while wait > 0:
                await asyncio.sleep(wait)
                wait, shift = self._shift - shift, self._shift  # a pause while we slept moved our slot back
        except asyncio.CancelledError:
            self._tokens += 1.0  # give the reserved slot back
            raise

    def pause(self, seconds: float) -> None:
        """Let no acquisition through for ``seconds`` (a server said Retry-After); not cumulative.

        Waiters already queued keep their order and spacing: every reserved slot moves back by the part of
        the pause that reaches past the current one, so the queue resumes at ``rate``, not in a burst.
        """
        now = time.monotonic()
        self._refill(now)
        until = now + seconds
        delta = max(0.0, until - max(self._paused_until, now))
        self._paused_until = max(self._paused_until, until)
        self._shift += delta
        # the queue's end moves back by delta; an empty queue's next slot is the end of the pause
        self._tokens = min(self._tokens - delta * self.rate, 1.0 - (self._paused_until - now) * self.rate)
