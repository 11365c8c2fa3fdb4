"""Refusal judges: published keyword presets, the project's offline judge, and agreement measurement."""

from visalign.evaluation.judges.agreement import (
    JudgeAgreement,
    LabelledResponse,
    evaluate_refusal_judges,
    load_labelled_responses,
    measure_agreement,
)
from visalign.evaluation.judges.keyword import (
    GCG_EVAL_PREFIXES,
    GCG_TEST_PREFIXES,
    KEYWORD_JUDGES,
    VLGUARD_REJECT_LIST,
    XSTEST_PREFIXES,
    KeywordJudge,
)
from visalign.evaluation.judges.refusal import HeuristicRefusalJudge, gather_evidence
from visalign.evaluation.judges.registry import (
    DEFAULT_REFUSAL_JUDGE,
    get_refusal_judge,
    refusal_judge_names,
    register_refusal_judge,
)
from visalign.evaluation.judges.run import judge_refusal_file
from visalign.evaluation.judges.verdict import RefusalJudge, RefusalLabel, Verdict

__all__ = [
    "DEFAULT_REFUSAL_JUDGE",
    "GCG_EVAL_PREFIXES",
    "GCG_TEST_PREFIXES",
    "KEYWORD_JUDGES",
    "VLGUARD_REJECT_LIST",
    "XSTEST_PREFIXES",
    "HeuristicRefusalJudge",
    "JudgeAgreement",
    "KeywordJudge",
    "LabelledResponse",
    "RefusalJudge",
    "RefusalLabel",
    "Verdict",
    "evaluate_refusal_judges",
    "gather_evidence",
    "get_refusal_judge",
    "judge_refusal_file",
    "load_labelled_responses",
    "measure_agreement",
    "refusal_judge_names",
    "register_refusal_judge",
]
