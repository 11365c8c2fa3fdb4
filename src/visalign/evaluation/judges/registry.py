"""Refusal judges by name: the project's default, the published keyword presets, and :func:`register_refusal_judge`."""

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

#: Judges registered with :func:`register_refusal_judge`; looked up before the built-in ones, which they may replace.
_REGISTERED: dict[str, RefusalJudge] = {}


def refusal_judge_names() -> list[str]:
    """Return the names accepted by :func:`get_refusal_judge`, the default first, registered ones last."""
    built_in = [DEFAULT_REFUSAL_JUDGE, *(name for name in OUR_JUDGES if name != DEFAULT_REFUSAL_JUDGE), *KEYWORD_JUDGES]
    return [*built_in, *(name for name in _REGISTERED if name not in built_in)]


def register_refusal_judge(name: str, judge: RefusalJudge, *, replace: bool = False) -> RefusalJudge:
    """Make ``judge`` available as refusal judge ``name`` (a config's ``refusal_judge``, ``visalign judge``).

    ``judge`` is any object with ``judge(response, prompt="") -> Verdict`` (see :class:`RefusalJudge`): it labels
    ``refusal``, ``compliance`` or ``unknown`` and should set ``Verdict.judge`` to ``name``. The same object judges
    every response, possibly from several threads; register it in the process before the run that names it.

    Args:
        name: the name a config gives as ``refusal_judge``.
        judge: the judge object (a :class:`KeywordJudge` or your own class).
        replace: replace a judge already known by ``name``, a built-in one included (re-running a notebook cell);
            otherwise a known name is refused. Records name the judge, so replacing a built-in one makes its
            name mean your judge.

    Returns:
        ``judge`` itself.

    Raises:
        VisalignError: ``judge`` has no ``judge`` method, or ``name`` is known and ``replace`` is False.
    """
    if not callable(getattr(judge, "judge", None)):
        raise VisalignError(f"refusal judge {name!r}: {judge!r} has no judge(response, prompt) method")
    if name in refusal_judge_names() and _REGISTERED.get(name) is not judge and not replace:
        raise VisalignError(
            f"refusal judge {name!r} is already known; pass replace=True to register_refusal_judge to replace it"
        )
    _REGISTERED[name] = judge
    return judge


def get_refusal_judge(name: str = DEFAULT_REFUSAL_JUDGE) -> RefusalJudge:
    """Return the refusal judge called ``name`` (``visalign-refusal``, ``-v2``, ``-v3``, ``xstest``, ``gcg``, ...).

    A judge registered with :func:`register_refusal_judge` comes before a built-in one of the same name.

    Raises:
        VisalignError: no judge has that name; the message lists the known ones.
    """
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in OUR_JUDGES:
        return HeuristicRefusalJudge(version=OUR_JUDGES[name])
    if name in KEYWORD_JUDGES:
        return KEYWORD_JUDGES[name]
    raise VisalignError(f"unknown refusal judge {name!r}; choose one of {', '.join(refusal_judge_names())}")
