"""Refusal judges by name: the project's default and the published keyword presets."""

from __future__ import annotations

from visalign.errors import VisalignError
from visalign.evaluation.judges.keyword import KEYWORD_JUDGES
from visalign.evaluation.judges.refusal import HeuristicRefusalJudge
from visalign.evaluation.judges.verdict import RefusalJudge

DEFAULT_REFUSAL_JUDGE = "visalign-refusal"
#: The project's judges by name and version (version 1 is the default every recorded figure used).
OUR_JUDGES = {DEFAULT_REFUSAL_JUDGE: 1, "visalign-refusal-v2": 2, "visalign-refusal-v3": 3}


def refusal_judge_names() -> list[str]:
    """Return the names accepted by :func:`get_refusal_judge`, the default first."""
    return [*OUR_JUDGES, *KEYWORD_JUDGES]


def get_refusal_judge(name: str = DEFAULT_REFUSAL_JUDGE) -> RefusalJudge:
    """Return the refusal judge called ``name`` (``visalign-refusal``, ``-v2``, ``-v3``, ``xstest``, ``gcg``, ...).

    Raises:
        VisalignError: no judge has that name; the message lists the known ones.
    """
    if name in OUR_JUDGES:
        return HeuristicRefusalJudge(version=OUR_JUDGES[name])
    if name in KEYWORD_JUDGES:
        return KEYWORD_JUDGES[name]
    raise VisalignError(f"unknown refusal judge {name!r}; choose one of {', '.join(refusal_judge_names())}")
