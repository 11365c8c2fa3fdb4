"""LLM judges over an OpenAI-compatible API: MM-SafetyBench's prompts, rubric, Llama-Guard-style, answer grader.

The answer grader (``mm-vet``) gives credit for open capability answers against the reference (MM-Vet).

Each judge has a versioned prompt shipped as package data, ``async judge(prompt, response, category=...)``
returning a :class:`Judgement` (label, score, raw output, error) and a synchronous ``judge_all`` for batches.
Requests go through :class:`visalign.clients.ChatClient`, so its cache makes a repeated run free; a failing
endpoint gives a judgement with ``error`` set instead of stopping the run.

A judge of your own is an :class:`LLMJudge` subclass registered with :func:`register_llm_judge`.
"""

from visalign.evaluation.llm_judges.answer_grader import AnswerGrader, parse_credit
from visalign.evaluation.llm_judges.base import LLMJudge, fill, load_prompt_json, load_prompt_text
from visalign.evaluation.llm_judges.judgement import UNKNOWN, JudgeItem, Judgement
from visalign.evaluation.llm_judges.llama_guard import (
    HAZARD_CATEGORIES,
    LlamaGuardJudge,
    LlamaGuardNativeJudge,
    parse_guard,
)
from visalign.evaluation.llm_judges.mm_safetybench import MMSafetyBenchJudge, parse_safe_unsafe, scenario_key
from visalign.evaluation.llm_judges.registry import (
    ANSWER_GRADERS,
    LLM_JUDGES,
    answer_grader_names,
    get_llm_judge,
    llm_judge_names,
    register_llm_judge,
)
from visalign.evaluation.llm_judges.rubric import RubricJudge, parse_rubric

__all__ = [
    "ANSWER_GRADERS",
    "HAZARD_CATEGORIES",
    "LLM_JUDGES",
    "UNKNOWN",
    "AnswerGrader",
    "JudgeItem",
    "Judgement",
    "LLMJudge",
    "LlamaGuardJudge",
    "LlamaGuardNativeJudge",
    "MMSafetyBenchJudge",
    "RubricJudge",
    "answer_grader_names",
    "fill",
    "get_llm_judge",
    "llm_judge_names",
    "load_prompt_json",
    "load_prompt_text",
    "parse_credit",
    "parse_guard",
    "parse_rubric",
    "parse_safe_unsafe",
    "register_llm_judge",
    "scenario_key",
]
