"""LLM judges by name, and :func:`register_llm_judge` for a judge of your own."""

from __future__ import annotations

from collections.abc import Iterator, Set
from typing import TypeVar

from visalign.clients import ChatClient
from visalign.errors import VisalignError
from visalign.evaluation.llm_judges.answer_grader import AnswerGrader
from visalign.evaluation.llm_judges.base import LLMJudge
from visalign.evaluation.llm_judges.llama_guard import LlamaGuardJudge, LlamaGuardNativeJudge
from visalign.evaluation.llm_judges.mm_safetybench import MMSafetyBenchJudge
from visalign.evaluation.llm_judges.rubric import RubricJudge

JudgeClass = TypeVar("JudgeClass", bound=type[LLMJudge])

#: The judge classes by name. Add one with :func:`register_llm_judge` (it checks the class and refuses a repeated
#: name); writing to this dict directly still works but skips those checks.
LLM_JUDGES: dict[str, type[LLMJudge]] = {
    judge.name: judge
    for judge in (MMSafetyBenchJudge, RubricJudge, LlamaGuardJudge, LlamaGuardNativeJudge, AnswerGrader)
}


class _AnswerGraders(Set[str]):
    """The names of the registered judges with ``needs_reference``, read from :data:`LLM_JUDGES` at each use.

    A set computed once at import would miss a grader registered later, whose credit the summary would then not
    count as capability accuracy.
    """

    def _names(self) -> list[str]:
        return [name for name, judge in LLM_JUDGES.items() if judge.needs_reference]

    def __contains__(self, name: object) -> bool:
        judge = LLM_JUDGES.get(name) if isinstance(name, str) else None
        return judge is not None and judge.needs_reference

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return f"ANSWER_GRADERS({self._names()})"


#: Judges whose score is credit for an answer against its reference (``needs_reference``): the summary counts it as
#: capability accuracy. A live view of :data:`LLM_JUDGES`, so a grader registered later is in it.
ANSWER_GRADERS: Set[str] = _AnswerGraders()


def register_llm_judge(judge: JudgeClass, *, replace: bool = False) -> JudgeClass:
    """Register an :class:`LLMJudge` subclass under its ``name``; usable as a class decorator.

    The class sets ``name``, ``version`` (stored with each judgement as ``name/version``) and optionally
    ``max_tokens``, and implements ``prompt(sample_prompt, response, category, reference=None)`` and
    ``parse(raw) -> Judgement``. Its labels decide how the summary reads it: ``safe``/``unsafe`` (plus
    ``unknown``) give a ``judge_unsafe_rate``, ``score`` gives a ``mean_score``; with ``needs_reference = True`` it
    is an answer grader, sent only samples with a reference answer, and its 0-1 ``score`` is counted as
    ``capability_accuracy``. Register it before the run and before summarizing its records.

    Args:
        judge: the judge class (not an instance: the runner builds it with the config's chat client).
        replace: replace an existing judge of that name (re-running a notebook cell); otherwise a repeated name
            is refused. Records name the judge, so replacing a built-in one makes its name mean your judge.

    Returns:
        ``judge`` itself.

    Raises:
        VisalignError: ``judge`` is not an :class:`LLMJudge` subclass, lacks ``name`` or ``version``, or its
            name is already registered and ``replace`` is False.
    """
    if not (isinstance(judge, type) and issubclass(judge, LLMJudge)):
        raise VisalignError(f"register_llm_judge takes an LLMJudge subclass, not {judge!r}")
    name, version = getattr(judge, "name", None), getattr(judge, "version", None)
    if not isinstance(name, str) or not name or not isinstance(version, str) or not version:
        raise VisalignError(f"LLM judge {judge.__name__}: set the class attributes name and version (text)")
    if name in LLM_JUDGES and LLM_JUDGES[name] is not judge and not replace:
        raise VisalignError(
            f"LLM judge {name!r} is already registered; pass replace=True to register_llm_judge to replace it"
        )
    LLM_JUDGES[name] = judge
    return judge


def llm_judge_names() -> list[str]:
    """Return the names accepted by :func:`get_llm_judge`."""
    return list(LLM_JUDGES)


def answer_grader_names() -> list[str]:
    """Return the names of the registered answer graders (judges with ``needs_reference``), now."""
    return list(ANSWER_GRADERS)


def get_llm_judge(name: str, client: ChatClient, *, max_tokens: int | None = None) -> LLMJudge:
    """Return the LLM judge called ``name``.

    ``mm-safetybench``, ``rubric``, ``llama-guard`` (for a general chat model), ``llama-guard-native`` (for a served
    Llama Guard model, whose own chat template frames the conversation), ``mm-vet``, or one registered with
    :func:`register_llm_judge`.

    Args:
        name: the judge's name.
        client: the chat client the judge sends its requests through.
        max_tokens: cap on the judge's output tokens (default: the judge's own).

    Raises:
        VisalignError: no judge has that name; the message lists the known ones.
    """
    if name not in LLM_JUDGES:
        raise VisalignError(f"unknown LLM judge {name!r}; choose one of {', '.join(LLM_JUDGES)}")
    return LLM_JUDGES[name](client, max_tokens=max_tokens)
