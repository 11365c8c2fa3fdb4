"""LLM judges by name."""

from __future__ import annotations

from visalign.clients import ChatClient
from visalign.errors import VisalignError
from visalign.evaluation.llm_judges.answer_grader import AnswerGrader
from visalign.evaluation.llm_judges.base import LLMJudge
from visalign.evaluation.llm_judges.llama_guard import LlamaGuardJudge, LlamaGuardNativeJudge
from visalign.evaluation.llm_judges.mm_safetybench import MMSafetyBenchJudge
from visalign.evaluation.llm_judges.rubric import RubricJudge

LLM_JUDGES: dict[str, type[LLMJudge]] = {
    judge.name: judge
    for judge in (MMSafetyBenchJudge, RubricJudge, LlamaGuardJudge, LlamaGuardNativeJudge, AnswerGrader)
}
#: Judges whose score is credit for an answer against its reference: the summary counts it as capability accuracy.
ANSWER_GRADERS = frozenset(name for name, judge in LLM_JUDGES.items() if judge.needs_reference)


def llm_judge_names() -> list[str]:
    """Return the names accepted by :func:`get_llm_judge`."""
    return list(LLM_JUDGES)


def get_llm_judge(name: str, client: ChatClient, *, max_tokens: int | None = None) -> LLMJudge:
    """Return the LLM judge called ``name``.

    ``mm-safetybench``, ``rubric``, ``llama-guard`` (for a general chat model), ``llama-guard-native`` (for a served
    Llama Guard model, whose own chat template frames the conversation) or ``mm-vet``.

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
