"""Using a magic image at inference: attach it to conversations, answer, and measure refusal rates."""

from __future__ import annotations

from collections.abc import Sequence

from visalign.evaluation import metrics
from visalign.evaluation.judges import DEFAULT_REFUSAL_JUDGE, get_refusal_judge
from visalign.magic.artifact import MagicImage
from visalign.magic.data import Example
from visalign.magic.placement import Placement, attach, crops_to_square, resolve_placement
from visalign.models import VLM, Conversation, user
from visalign.models.conversation import ImageLike


def with_magic_image(vlm: VLM, conversations: Sequence[Conversation], magic: MagicImage | ImageLike | None,
                     placement: str = "auto") -> list[Conversation]:
    """Attach ``magic`` to every conversation (unchanged copies when ``magic`` is None).

    Args:
        vlm: the model the conversations are for (its family decides ``auto`` placement).
        conversations: the users' conversations.
        magic: a loaded :class:`MagicImage` (its recorded placement is used unless ``placement`` says otherwise),
            a PIL image or a tensor, or None.
        placement: ``auto``, ``prepend`` or ``canvas``.
    """
    if magic is None:
        return [list(c) for c in conversations]
    if isinstance(magic, MagicImage):
        placement = magic.placement if placement == "auto" else placement
        magic = magic.image
    resolved: Placement = resolve_placement(vlm.family, placement, square_crop=crops_to_square(vlm))
    return [attach(c, magic, resolved) for c in conversations]


def answer_with_magic_image(vlm: VLM, conversations: Sequence[Conversation], magic: MagicImage | None, *,
                            max_new_tokens: int = 128, batch_size: int = 16) -> list[str]:
    """Greedy answers to ``conversations`` with the magic image attached (None: without it)."""
    return vlm.generate(with_magic_image(vlm, conversations, magic), max_new_tokens=max_new_tokens,
                        batch_size=batch_size)


def refusal_rates(vlm: VLM, examples: Sequence[Example], magic: MagicImage | ImageLike | None, *,
                  placement: str = "auto", judge: str = DEFAULT_REFUSAL_JUDGE, max_new_tokens: int = 24,
                  batch_size: int = 16) -> dict:
    """Refusal rate of the model on ``examples``, overall and per category, with ``magic`` attached or without.

    The rate is that of ``visalign eval`` (:func:`metrics.refusal_rate`): refused / judged, where ``unknown``
    verdicts are left out of the denominator and counted apart, never taken as answers.

    Returns ``{"n", "refused", "unknown", "judged", "rate", "ci95", "by_category": {category: rate}, "answers"}``:
    ``judged = n - unknown``; ``rate`` (and a category's) is None when nothing was judged; ``ci95`` is the Wilson
    interval.
    """
    if not examples:
        return {"n": 0, "refused": 0, "unknown": 0, "judged": 0, "rate": None, "ci95": [None, None],
                "by_category": {}, "answers": []}
    conversations = [[user(e.prompt, *e.images)] for e in examples]
    answers = vlm.generate(with_magic_image(vlm, conversations, magic, placement), max_new_tokens=max_new_tokens,
                           batch_size=batch_size)
    refusal_judge = get_refusal_judge(judge)
    labels = [refusal_judge.judge(a, e.prompt).label for a, e in zip(answers, examples, strict=True)]
    rate = metrics.refusal_rate(labels)
    by_category = metrics.per_category([e.category or "none" for e in examples], labels, metrics.refusal_rate)
    return {
        "n": len(examples),
        "refused": rate.numerator,
        "unknown": rate.unknown,
        "judged": rate.denominator,
        "rate": rate.value,
        "ci95": [rate.ci_low, rate.ci_high],
        "by_category": {category: r.value for category, r in by_category.items()},
        "answers": [{"id": e.id, "answer": a, "label": lab} for e, a, lab in zip(examples, answers, labels,
                                                                                   strict=True)],
    }
