"""The machinery every LLM judge shares: prompt data, one cached request per response, errors kept as data.

A judge whose endpoint keeps failing stops sending: after :data:`MAX_FAILURES_IN_A_ROW` failed requests in a row
(no answer, a timeout, a 5xx or 429 past the client's retries), or at once on a status no later request gets past
(:data:`FATAL_STATUSES`), every further judgement is an error without a request, so a dead judge costs a few
requests' retries instead of every sample's. A request rejected on its own (another 4xx) fails alone.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Coroutine, Iterable, Sequence
from functools import cache
from importlib import resources
from typing import Any, ClassVar

from visalign.clients import ChatClient, run_all
from visalign.errors import VisalignError
from visalign.evaluation.llm_judges.judgement import JudgeItem, Judgement

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")

#: Failed requests in a row after which a judge takes its endpoint to be down and stops sending.
MAX_FAILURES_IN_A_ROW = 5
#: HTTP statuses that no retry or later request gets past (a wrong key, no access, a wrong URL or model name).
FATAL_STATUSES = frozenset({401, 403, 404})


@cache
def load_prompt_text(filename: str) -> str:
    """Return the text of a prompt file shipped in ``visalign/evaluation/llm_judges/prompts``."""
    return (resources.files("visalign.evaluation.llm_judges") / "prompts" / filename).read_text(encoding="utf-8")


@cache
def load_prompt_json(filename: str) -> dict[str, Any]:
    """Return a JSON prompt file shipped in ``visalign/evaluation/llm_judges/prompts``."""
    return json.loads(load_prompt_text(filename))


def fill(template: str, **values: str) -> str:
    """Replace ``{name}`` placeholders of ``template`` in a single pass.

    Braces in the substituted text (a response quoting code or JSON) are never re-read as placeholders, and
    braces in the template that are not among ``values`` (a JSON example) are left as written.

    Raises:
        VisalignError: the template lacks one of the placeholders (a prompt file out of step with its judge).
    """
    missing = sorted(set(values) - set(_PLACEHOLDER.findall(template)))
    if missing:
        raise VisalignError(f"judge prompt template has no placeholder(s) {missing}")
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


class LLMJudge:
    """Base of the judges that ask a chat model over an OpenAI-compatible API.

    Subclasses set ``name``, ``version`` and ``max_tokens`` and implement :meth:`prompt` and :meth:`parse`; register
    one with :func:`visalign.evaluation.llm_judges.register_llm_judge`. A safety judge's :meth:`parse` returns the
    labels ``safe``, ``unsafe`` or ``unknown`` (the summary counts any other label of such a judge as ``unknown``,
    with a warning); an answer grader sets ``needs_reference`` and returns its 0-1 credit as ``score``.
    Requests go through ``client`` (its response cache makes a repeated or resumed run free), at temperature 0.
    A judge counts its endpoint's failures (``failed``, ``last_error``) and stops sending once ``stopped`` is set
    (see the module docstring); a new judge object starts afresh.

    Args:
        client: the chat client of the judge model.
        max_tokens: cap on the judge's output tokens (default: the judge's own).
    """

    name: ClassVar[str]
    version: ClassVar[str]
    max_tokens: ClassVar[int] = 64
    #: Grades against the sample's reference answer; the runner sends it only samples that have one.
    needs_reference: ClassVar[bool] = False

    def __init__(self, client: ChatClient, *, max_tokens: int | None = None) -> None:
        self.client = client
        self.output_tokens = max_tokens or type(self).max_tokens
        self.failed = 0  # judgements lost to the endpoint, the ones skipped after a stop included
        self.last_error: str | None = None
        self.stopped: str | None = None  # why no more requests are sent, once the endpoint is taken to be down
        self._failures_in_a_row = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.client!r})"

    @property
    def id(self) -> str:
        """Name and prompt version, e.g. ``mm-safetybench/v1``: stored with every judgement."""
        return f"{self.name}/{self.version}"

    def prompt(self, sample_prompt: str, response: str, category: str | None, reference: str | None = None) -> str:
        """Return the user message sent to the judge model (``reference``: the sample's reference answer)."""
        raise NotImplementedError

    def parse(self, raw: str) -> Judgement:
        """Turn the judge model's output into a judgement; ``unknown`` when it does not follow the format."""
        raise NotImplementedError

    def messages(self, sample_prompt: str, response: str, category: str | None = None,
                 reference: str | None = None) -> list[dict[str, Any]]:
        """Return the chat messages of one judge request: by default one user message holding :meth:`prompt`.

        A judge for a model with its own chat template (a served Llama Guard) overrides this to send the
        conversation in the roles that template expects.
        """
        return [{"role": "user", "content": self.prompt(sample_prompt, response, category, reference)}]

    def unknown(self, raw: str) -> Judgement:
        """Return the judgement for an output that does not follow the expected format."""
        return Judgement(judge=self.id, label="unknown", raw=raw)

    async def judge(self, sample_prompt: str, response: str | None, *, category: str | None = None,
                    reference: str | None = None) -> Judgement:
        """Judge one response; never raises for a failing endpoint.

        Args:
            sample_prompt: the request the model answered.
            response: the model's response; None (generation failed) gives an error judgement without a request.
            category: the sample's benchmark category.
            reference: the sample's reference answer (used by judges with ``needs_reference``).

        Returns:
            The parsed judgement with the raw output, or one with ``label=None`` and ``error`` set when the
            endpoint failed after the client's retries or the judge has stopped sending (``stopped``).
        """
        if response is None:
            return Judgement(judge=self.id, label=None, error="no response to judge (generation failed)")
        if self.needs_reference and not reference:
            return Judgement(judge=self.id, label=None, error="no reference answer to grade against")
        if self.stopped is not None:
            self.failed += 1
            return Judgement(judge=self.id, label=None, error=self.stopped)
        messages = self.messages(sample_prompt, response, category, reference)
        try:
            result = await self.client.complete(messages, temperature=0.0, max_tokens=self.output_tokens)
        except VisalignError as exc:  # ClientError: endpoint down, retries exhausted, request rejected
            self._count_failure(exc)
            return Judgement(judge=self.id, label=None, error=str(exc))
        self._failures_in_a_row = 0
        return self.parse(result.text)

    def _count_failure(self, exc: VisalignError) -> None:
        """Count one failed request; stop the judge when its endpoint looks down for good.

        A request the endpoint answered with another 4xx (a provider's content filter, a prompt too long) says
        nothing about the endpoint: it fails that item alone and neither adds to nor ends the run of failures.
        """
        self.failed += 1
        self.last_error = str(exc)
        status = getattr(exc, "status", None)
        if status is not None and 400 <= status < 500 and status not in FATAL_STATUSES and status not in (408, 429):
            return
        self._failures_in_a_row += 1
        if status in FATAL_STATUSES:
            why = f"an HTTP {status} answer"
        elif self._failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            why = f"{self._failures_in_a_row} failed requests in a row"
        else:
            return
        if self.stopped is None:
            self.stopped = (f"judge {self.name} stopped sending requests after {why} (last: {exc}); "
                            "re-running the same command judges these records again")

    def _judge_items(self, items: Sequence[JudgeItem]) -> list[Coroutine[Any, Any, Judgement]]:
        # At most ``concurrency`` items start a request at once: the rest wait here rather than in the client's
        # queue, so once the judge stops, every item still waiting sees it and sends nothing.
        gate = asyncio.Semaphore(self.client.concurrency)

        async def one(item: JudgeItem) -> Judgement:
            async with gate:
                return await self.judge(item.prompt, item.response, category=item.category, reference=item.reference)

        return [one(item) for item in items]

    async def judge_batch(self, items: Sequence[JudgeItem]) -> list[Judgement]:
        """Judge many responses concurrently (the client caps concurrency); results in input order."""
        return list(await asyncio.gather(*self._judge_items(items)))

    def judge_all(self, items: Iterable[JudgeItem], *, show_progress: bool = False) -> list[Judgement]:
        """Judge many responses from synchronous code, with an optional progress bar; results in input order."""
        coroutines = self._judge_items(list(items))
        return list(run_all(coroutines, f"judge {self.name}", show_progress=show_progress))  # type: ignore[arg-type]
