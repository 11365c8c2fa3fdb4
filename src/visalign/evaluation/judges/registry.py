"""Refusal judges by name: the project's default and the published keyword presets."""

from __future__ import annotations

from visalign.errors import VisalignError
from visalign.evaluation.judges.keyword import KEYWORD_JUDGES
from visalign.evaluation.judges.refusal import HeuristicRefusalJudge
from visalign.evaluation.judges.verdict import RefusalJudge

#: The project's judges by name and version. Version 1 is the judge every figure recorded before 2026-11-23 used
#: (the shipped configs behind those figures name it). The default is the newest version that scored best on a
#: held-out set written blind to its rules, by a rule set before scoring (docs/JUDGES.md): version 6.
OUR_JUDGES = {
    "visalign-refusal": 1,
    "visalign-refusal-v2": 2,
    "visalign-refusal-v3": 3,
    "visalign-refusal-v4": 4,
    "visalign-refusal-v5": 5,
    "visalign-refusal-v6": 6,
}
DEFAULT_REFUSAL_JUDGE = "visalign-refusal-v6"


def refusal_judge_names() -> list[str]:
    """Return the names accepted by :func:`get_refusal_judge`, the default first."""
    return [DEFAULT_REFUSAL_JUDGE, *(name for name in OUR_JUDGES if name != DEFAULT_REFUSAL_JUDGE), *KEYWORD_JUDGES]


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
