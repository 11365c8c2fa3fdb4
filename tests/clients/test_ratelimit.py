import asyncio
import time

import pytest

from visalign.clients import TokenBucket, parse_retry_after


def timed_acquisitions(bucket, n):
    async def main():
        stamps = []
        started = time.monotonic()

        async def one():
            await bucket.acquire()
            stamps.append(time.monotonic() - started)

        await asyncio.gather(*(one() for _ in range(n)))
        return sorted(stamps)

    return asyncio.run(main())


def test_evenly_spaced_without_burst():
    stamps = timed_acquisitions(TokenBucket(50), 11)
    assert stamps[-1] - stamps[0] >= 10 / 50 - 0.002
    assert min(b - a for a, b in zip(stamps, stamps[1:], strict=False)) >= 1 / 50 - 0.005  # timer jitter


def test_burst_passes_immediately_then_paces():
    stamps = timed_acquisitions(TokenBucket(20, burst=5), 7)
    assert stamps[4] - stamps[0] < 1 / 20  # the burst waits for no token (no timing bound: the machine may be busy)
    assert stamps[5] >= 1 / 20 - 0.002 and stamps[6] >= 2 / 20 - 0.002


def test_pause_holds_back_next_acquisition_and_is_not_cumulative():
    bucket = TokenBucket(100, burst=10)
    before = time.monotonic()
    bucket.pause(0.3)
    bucket.pause(0.3)
    assert bucket._paused_until - time.monotonic() <= 0.3  # the second pause did not add to the first
    asyncio.run(bucket.acquire())
    # from before the pause, not from the acquisition's start: on a busy machine time passes in between
    assert time.monotonic() - before >= 0.3 - 0.002


def test_invalid_rate():
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_parse_retry_after():
    from email.utils import formatdate

    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 8 <= parse_retry_after(formatdate(time.time() + 10, usegmt=True)) <= 10
    assert parse_retry_after(formatdate(time.time() - 100, usegmt=True)) == 0.0


def test_pause_holds_back_waiters_already_queued_and_keeps_their_order():
    bucket = TokenBucket(20)

    async def main():
        started, stamps = time.monotonic(), []

        async def one(i):
            await bucket.acquire()
            stamps.append((i, time.monotonic() - started))

        tasks = [asyncio.create_task(one(i)) for i in range(4)]  # slots at 0, 0.05, 0.10, 0.15
        await asyncio.sleep(0.02)
        bucket.pause(0.3)  # a 429 said Retry-After: 0.3
        tasks.append(asyncio.create_task(one(4)))
        await asyncio.gather(*tasks)
        return stamps

    stamps = asyncio.run(main())
    assert [i for i, _ in stamps] == [0, 1, 2, 3, 4]  # first come, first served across the pause
    times = [t for _, t in stamps]
    assert times[0] < 0.3 and times[1] >= 0.02 + 0.3 - 0.005  # the first had its slot before the pause
    assert min(b - a for a, b in zip(times[1:], times[2:], strict=False)) >= 1 / 20 - 0.02  # timer jitter
