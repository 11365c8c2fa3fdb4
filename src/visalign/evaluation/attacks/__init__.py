"""Attacks that carry a request in an image: FigStep, MM-SafetyBench TYPO / SD_TYPO, and any text set."""

from visalign.evaluation.attacks.figstep import (
    FIGSTEP_PROMPT,
    figstep_filename,
    figstep_text,
    render_figstep,
    render_figstep_fitted,
)
from visalign.evaluation.attacks.figstep_csv import FigStepRenderReport, render_figstep_csv
from visalign.evaluation.attacks.fonts import FontChoice, FontFallbackWarning, load_font, resolve_font
from visalign.evaluation.attacks.mmsafetybench import (
    render_sd_typo,
    render_typo,
    stack_vertically,
    wrap_to_width,
)
from visalign.evaluation.attacks.typographic import (
    TYPO_PROMPT,
    attack_image,
    attack_image_png,
    typographic_attack,
    write_attack_image,
    write_typographic_set,
)

__all__ = [
    "FIGSTEP_PROMPT",
    "TYPO_PROMPT",
    "FigStepRenderReport",
    "FontChoice",
    "FontFallbackWarning",
    "attack_image",
    "attack_image_png",
    "figstep_filename",
    "figstep_text",
    "load_font",
    "render_figstep",
    "render_figstep_csv",
    "render_figstep_fitted",
    "render_sd_typo",
    "render_typo",
    "resolve_font",
    "stack_vertically",
    "typographic_attack",
    "wrap_to_width",
    "write_attack_image",
    "write_typographic_set",
]
