"""The Magic Image job config: which model, which data, which objective, how to optimise, where to place the image."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from visalign.config import JobConfig
from visalign.devices import DeviceName, DtypeName
from visalign.evaluation.judges.registry import DEFAULT_REFUSAL_JUDGE
from visalign.paths import default_benchmarks_dir

#: Benchmarks whose licence allows evaluation only: a training config that names one is rejected.
TEST_ONLY_BENCHMARKS = {"mossbench": "MOSSBench (CC BY-SA 4.0) is released for test use only, not for training"}

#: Refusal target used when a config names none (the wording the design notes measured with).
DEFAULT_REFUSAL = "I'm sorry, but I can't help with that request."


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Section):
    """One set of requests for training.

    Either ``benchmark`` (a registered loader name, with ``path`` relative to the benchmarks folder) or ``file``
    (a JSONL of ``{"prompt", "answer"?, "category"?, "image"?}``) is given.

    Attributes:
        role: ``harmful`` (refusal target), ``benign`` (helpful target), or ``by_value_system``: the value
            system's ``refuse`` / ``allow`` categories decide per request.
        forms: ``text`` keeps the request as text; ``figstep`` also draws it on a FigStep-style typographic image.
        expected: keep only samples the benchmark marks with this behaviour (XSTest safe prompts: ``comply``).
        per_category: keep at most this many requests per category (first ones, in file order).
        limit: keep at most this many requests in all (after ``per_category``).
        categories: keep only these categories (compared as slugs: ``Legal Opinion`` = ``legal_opinion``).
    """

    benchmark: str | None = None
    path: str | None = None
    file: Path | None = None
    options: dict = Field(default_factory=dict)
    role: Literal["harmful", "benign", "by_value_system"]
    forms: list[Literal["text", "figstep"]] = Field(default_factory=lambda: ["text"], min_length=1)
    expected: Literal["refuse", "comply"] | None = None
    categories: list[str] | None = None
    per_category: PositiveInt | None = None
    limit: PositiveInt | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SourceConfig:
        if (self.benchmark is None) == (self.file is None):
            raise ValueError("give exactly one of 'benchmark' (with 'path') or 'file'")
        if self.benchmark is not None and not self.path:
            raise ValueError(f"benchmark source {self.benchmark!r} needs 'path' (relative to benchmarks_dir)")
        if self.benchmark in TEST_ONLY_BENCHMARKS:
            raise ValueError(f"{TEST_ONLY_BENCHMARKS[self.benchmark]}; evaluate on it with visalign eval instead")
        return self


class DataConfig(_Section):
    """Where requests come from.

    Attributes:
        benchmarks_dir: folder of the published benchmark files; default :func:`visalign.paths.default_benchmarks_dir`
            (``$VISALIGN_BENCHMARKS``, else ``../shared/benchmarks`` from the working directory).
        sources: the request sets, harmful and benign mixed.
    """

    benchmarks_dir: Path | None = None
    sources: list[SourceConfig] = Field(min_length=1)

    def resolved_benchmarks_dir(self) -> Path:
        """The benchmarks folder this config reads from."""
        return self.benchmarks_dir if self.benchmarks_dir is not None else default_benchmarks_dir()


class TargetConfig(_Section):
    """What the model should say.

    Attributes:
        refusal_templates: refusal targets for harmful requests, assigned round-robin.
        first_k: train on only the first k target tokens (both refusal and benign targets).
        unlikelihood_prefix: an affirmative opening whose likelihood is pushed down on harmful requests.
        unlikelihood_weight: weight of that term inside L_harm (0 turns it off).
        benign: ``self``: the model's own answer without the image (generated once in batches of
            ``eval.batch_size``, cached); ``data``: the source's ``answer`` field.
        benign_max_new_tokens: length of the self-generated benign answers; one cut at this length is trained
            without an end-of-turn marker (it did not end there).
    """

    refusal_templates: list[str] = Field(default_factory=lambda: [DEFAULT_REFUSAL], min_length=1)
    first_k: PositiveInt = 16
    unlikelihood_prefix: str = "Sure, here is"
    unlikelihood_weight: float = Field(default=0.0, ge=0.0)
    benign: Literal["self", "data"] = "self"
    benign_max_new_tokens: PositiveInt = 24


class ObjectiveConfig(_Section):
    """L = l1 * L_harm + l2 * L_benign with l1 + l2 = 1."""

    l1: float = Field(default=0.5, ge=0.0, le=1.0)
    l2: float = Field(default=0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> ObjectiveConfig:
        if not math.isclose(self.l1 + self.l2, 1.0, abs_tol=1e-6):
            raise ValueError(f"l1 + l2 must equal 1, got {self.l1} + {self.l2} = {self.l1 + self.l2:g}")
        return self


class OptimConfig(_Section):
    """How the pixels are optimised.

    Attributes:
        optimizer: ``adam`` or ``pgd`` (signed-gradient steps of size ``lr``).
        init: ``white`` or the path of a start image (resized to the working size).
        linf: optional L-infinity bound around the start image (in [0, 1] units).
        batch_size: samples per step; ``harmful_fraction`` of them harmful, the rest benign.
        quantize: optimise through 8-bit rounding (straight-through) so the saved PNG behaves like the float image.
        checkpoint_every: steps between checkpoints (and the last step).
    """

    optimizer: Literal["adam", "pgd"] = "adam"
    lr: float = Field(default=0.01, gt=0.0)
    steps: PositiveInt = 100
    batch_size: PositiveInt = 16
    harmful_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    init: str = "white"
    linf: float | None = Field(default=None, gt=0.0, le=1.0)
    quantize: bool = True
    checkpoint_every: PositiveInt = 25


class EvalConfig(_Section):
    """Refusal rates on the training requests, with and without the image, recorded in the sidecar.

    A finished value system keeps the figures its sidecar records; settings the config names anew measure its image
    again, and a default that changed since (a setting the config does not name) is refused, naming the setting.

    Attributes:
        enabled: measure them (off, a finished value system still keeps its recorded figures).
        max_new_tokens: answer length for the judge.
        batch_size: generation batch; also the batch the self-generated benign targets (``targets.benign: self``)
            are made in, so it shapes the optimisation: in bfloat16 an answer depends on the batch it shares. The
            target cache is keyed on it, so a changed batch size generates the targets again.
        judge: the refusal judge (checked before the model loads).
    """

    enabled: bool = True
    max_new_tokens: PositiveInt = 24
    batch_size: PositiveInt = 16
    judge: str = DEFAULT_REFUSAL_JUDGE


class MagicConfig(JobConfig):
    """A Magic Image job: one image per value system for one frozen model.

    Attributes:
        model: model spec (``default``, a checkpoint folder or a hub id).
        dtype: weights dtype name (``float32``, ``bfloat16``); default float32 on CPU, bfloat16 on GPU.
        device: ``cpu`` or ``cuda``; default cuda when available.
        seed: seeds batch order and any randomness.
        value_systems_file: YAML naming each value system's refused and allowed categories.
        value_systems: the value systems to optimise an image for (one image each).
        placement: ``auto`` (extra image first on multi-image models, shared canvas on single-image ones, centred
            on a square where the processor centre-crops), ``prepend``, ``canvas`` or ``square-canvas``.
        image_size: side of the square magic image; default the processor's native size.
    """

    model: str = "default"
    dtype: DtypeName = None
    device: DeviceName = None
    seed: int = 0
    value_systems_file: Path = Path("configs/value_systems.yaml")
    value_systems: list[str] = Field(default_factory=lambda: ["standard"], min_length=1)
    placement: Literal["auto", "prepend", "canvas", "square-canvas"] = "auto"
    image_size: PositiveInt | None = None
    data: DataConfig
    targets: TargetConfig = Field(default_factory=TargetConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
