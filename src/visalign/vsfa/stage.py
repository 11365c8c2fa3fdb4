"""Running one stage: bounded concurrency, one JSONL record per finished item, resume by key.

Records carry ``status``: ``ok``, ``failed`` (final for this config: the model's output never validated, the
image was corrupt) or ``error`` (the service failed after the client's retries: retried on the next run).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.progress import Progress

from visalign.errors import VisalignError
from visalign.runs import JsonlStore

#: Statuses that a re-run keeps; ``error`` records are tried again.
FINAL_STATUSES = frozenset({"ok", "failed"})
#: Stop a stage when this many service errors arrive before any answer (dead endpoint, wrong model name); records
#: finished by earlier sessions of the run count as answers, so a resume left with only items that always fail goes
#: on. A fixed count, not capped by the items left: one item that always fails must not stop every resume. A todo
#: list too short to reach it is stopped only when the stage has never had an answer in the whole run (see the end
#: of :func:`run_stage`), so a dead service on a one-abstract run still ends in its own error, not in 0 examples.
_BREAKER = 3
#: HTTP statuses that say the service itself is unusable; a 400/413/422 is about one item and never trips it. A 429
#: is here because the client retried it: one that outlived every retry is a spent quota (OpenAI's
#: ``insufficient_quota``) or a rate limit the run cannot get under, which no other item will get past either.
_SERVICE_STATUSES = frozenset({401, 403, 404, 429})


def _service_down(status: int | None) -> bool:
    """Whether a failed request points at the service (unreachable, 5xx, bad key, no such model, no quota)."""
    return status is None or status >= 500 or status in _SERVICE_STATUSES


@dataclass
class StageReport:
    """What one run of a stage did (this session only; totals come from the records)."""

    name: str
    total: int = 0
    already_done: int = 0
    ok: int = 0
    failed: int = 0
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)


def pending_keys(
    store: JsonlStore, keys: Sequence[str], still_valid: Callable[[dict], bool] | None = None
) -> list[str]:
    """Return the keys that still need work.

    That is: never stored, stored with a retryable ``error`` status, or stored with a final status that
    ``still_valid`` rejects (an image whose file was deleted).
    """
    todo = []
    for key in keys:
        record = store.get(key)
        final = record is not None and record.get("status") in FINAL_STATUSES
        if not final or (still_valid is not None and not still_valid(record)):
            todo.append(key)
    return todo


async def run_stage(
    name: str,
    items: Sequence[tuple[str, Any]],
    work: Callable[[Any], Awaitable[dict]],
    store: JsonlStore,
    *,
    concurrency: int,
    progress: Progress | None = None,
    still_valid: Callable[[dict], bool] | None = None,
) -> StageReport:
    """Run ``work`` on every item not yet finished in ``store`` and append each record as it completes.

    Args:
        name: the stage name (progress bar label, error messages).
        items: ``(key, payload)`` pairs; ``work(payload)`` returns the record to store under ``key``.
        work: the per-item coroutine; a :class:`visalign.clients.ClientError` it raises becomes an ``error``
            record (retried next run), other :class:`VisalignError` are fatal.
        store: where records go; its keys decide what is already done.
        concurrency: workers in flight (the clients also enforce their own limits).
        progress: an active rich progress display, or None.
        still_valid: whether a finished record still holds (None: every finished record does); a record it
            rejects is done again.

    Raises:
        VisalignError: the service failed for three items before any answer in this run (dead endpoint, bad key
            or model name, spent quota), or for every item of a stage that has never had an answer in this run, or
            a backend raised a fatal error. Records finished before that are kept. Otherwise fewer failing items
            than that, or items the service rejects one by one (a 400), are recorded as ``error`` and the run goes
            on, so a resume is never blocked by items that always fail.
    """
    from visalign.clients import ClientError

    report = StageReport(name=name, total=len(items))
    payloads = dict(items)
    todo = pending_keys(store, [key for key, _ in items], still_valid)
    report.already_done = len(items) - len(todo)
    bar = progress.add_task(name, total=len(items), completed=report.already_done) if progress else None
    queue: asyncio.Queue[str] = asyncio.Queue()
    for key in todo:
        queue.put_nowait(key)

    service_errors = 0

    async def worker() -> None:
        nonlocal service_errors
        while True:
            try:
                key = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                record = await work(payloads[key])
            except ClientError as exc:
                if _service_down(exc.status):
                    service_errors += 1
                # records finished by earlier sessions count as answers: a resume whose todo list is only items
                # that always fail must record them and go on to the next stage, not stop at every run
                answered = report.already_done + report.ok + report.failed
                if exc.status in (401, 403) or (answered == 0 and service_errors >= _BREAKER):
                    raise VisalignError(f"{name} stage stopped: {exc}") from None
                report.errors += 1
                if len(report.error_examples) < 3:
                    report.error_examples.append(str(exc))
                record = {store.key: key, "status": "error", "reason": str(exc)}
            store.append(record)
            if record.get("status") == "ok":
                report.ok += 1
            elif record.get("status") == "failed":
                report.failed += 1
            if progress is not None:
                progress.advance(bar)

    tasks = [asyncio.create_task(worker()) for _ in range(max(1, min(concurrency, len(todo))))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    never_answered = report.already_done == 0 and report.ok + report.failed == 0
    if todo and never_answered and service_errors == len(todo):
        raise VisalignError(
            f"{name} stage stopped: all {len(todo)} request(s) failed and none has ever succeeded in this run; "
            f"last: {report.error_examples[-1]}"
        )
    return report
