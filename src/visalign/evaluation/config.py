"""The evaluation job's config: which systems to evaluate on which benchmarks, and how to judge them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from visalign.config import JobConfig
from visalign.evaluation.defences import defence_prompt_problem
from visalign.evaluation.judges.registry import DEFAULT_REFUSAL_JUDGE


class SystemConfig(BaseModel):
    """One system under evaluation: a model plus, optionally, one defence.

    Attributes:
        name: label used in records, summaries and the report (unique in a config).
        model: model spec for the local backend (``default``, a folder, a hub id) or the API model name.
        backend: ``local`` (through visalign.models, batched) or ``openai`` (any OpenAI-compatible server).
        base_url: the server for the ``openai`` backend (vLLM, SGLang, a closed API).
        api_key_env: environment variable holding the API key (None for a local server without auth).
        adapter: a VSFA (LoRA) adapter folder applied to the local model.
        magic_image: a Magic Image PNG (with its JSON sidecar) attached to every conversation.
        value_system: which value system's magic image to use, when ``magic_image`` is a folder of several.
        allow_model_mismatch: evaluate a magic image or an adapter on weights other than those it was optimised
            or trained against (a transfer study); otherwise such a system is refused with the reason.
        defence_prompt: a system prompt defence: ``adashield-s`` for the built-in one, or the prompt text. A value
            with no whitespace (up to 40 characters) is read as a preset name and refused when it names none.
        concurrency: parallel requests for the ``openai`` backend.
        dtype: weights dtype of a ``local`` model: ``auto`` (float32 on a CPU, bfloat16 on a GPU), ``float32``,
            ``bfloat16`` or ``float16``. In float32 a greedy answer is the same whatever prompts share its batch;
            in bfloat16 and float16 a few answers change with the batch (``batch_size``, a benchmark's ``limit``),
            so name ``float32`` (or set ``batch_size: 1``) where answers must not depend on them. Left out of the
            config hash (:meth:`EvalConfig.hashed_settings`): the dtype it resolves to is pinned instead, with the
            device type, so a run is resumed in the precision and on the kind of device it began with.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str
    model: str = "default"
    backend: Literal["local", "openai"] = "local"
    base_url: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    adapter: Path | None = None
    magic_image: Path | None = None
    value_system: str | None = None
    allow_model_mismatch: bool = False
    defence_prompt: str | None = None
    concurrency: int = Field(default=8, ge=1)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    @model_validator(mode="after")
    def _backend_needs_url(self) -> SystemConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError(f"system {self.name!r}: the openai backend needs base_url")
        if self.backend == "openai" and (self.adapter or self.magic_image):
            raise ValueError(f"system {self.name!r}: adapters and magic images need the local backend")
        if self.backend == "openai" and self.dtype != "auto":
            raise ValueError(f"system {self.name!r}: dtype sets a local model's weights; the server chooses its own")
        if self.defence_prompt is not None and (problem := defence_prompt_problem(self.defence_prompt)):
            raise ValueError(f"system {self.name!r}: {problem}")
        return self

    @model_serializer(mode="wrap")
    def _omit_default_dtype(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # added after runs were recorded: left out at its default, a config dumps as before
        return _without_defaults(self, handler(self), ("dtype",))


class BenchmarkConfig(BaseModel):
    """One benchmark to run: a registered loader name, its source and optional sub-sampling or attack.

    Attributes:
        name: registered benchmark name (``visalign.evaluation.benchmarks.benchmark_names()``).
        source: the official file or folder (a relative path is read from the config file's folder when it exists
            there, else from the working directory).
        attack: ``figstep`` or ``typo`` turns each text prompt into a typographic image attack.
        limit: evaluate at most this many samples, drawn with ``seed`` and the benchmark's name (stable across
            runs, and the same rows for every arm of one benchmark that loads the same rows: plain and attacked,
            images and text); the source's unusable rows are kept at the same rate, so the error rate stays the
            source's.
        sampling: how ``limit`` draws. ``position`` (the default, which every recorded run used) draws positions
            in the loaded rows, so an arm that lost one row (an unreadable image) draws mostly other prompts than
            its sibling arms; ``id`` ranks every row by a hash of the seed, the benchmark's name and the row's id,
            so such an arm still draws its siblings' rows less the lost one. Prefer ``id`` for new experiments.
        label: name in records and reports (defaults to ``name`` plus the attack).
        options: loader-specific options (``split``, ``subset``...); a path option (``image_root``, ``images_dir``,
            ``render_dir``...) is read as ``source`` is. A value of the wrong type (``image_root: 2024``, a number
            to YAML) is refused naming the option.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    source: str
    attack: Literal["figstep", "typo"] | None = None
    limit: int | None = Field(default=None, ge=1)
    sampling: Literal["position", "id"] = "position"
    label: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @model_serializer(mode="wrap")
    def _omit_default_sampling(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # added after runs were recorded: left out at its default, a config dumps, and so hashes, as before
        return _without_defaults(self, handler(self), ("sampling",))

    @property
    def display_name(self) -> str:
        """Name used for this benchmark in records and reports."""
        return self.label or (f"{self.name}+{self.attack}" if self.attack else self.name)


#: ``LlmJudgeConfig``'s chat client settings, added after runs were recorded: dumped only when not at the default.
_CLIENT_SETTINGS = ("max_retries", "timeout_s", "requests_per_second")


class LlmJudgeConfig(BaseModel):
    """An LLM judge run on every response (``mm-safetybench``, ``rubric``, ``llama-guard``, ``llama-guard-native``).

    A judge whose endpoint keeps failing stops after a few failed requests and marks the rest of its judgements
    with the reason; re-running the same command judges those records again without answering them again.

    Attributes:
        name: registered judge name (``visalign.evaluation.llm_judges.llm_judge_names()``); ``llama-guard`` for
            a general chat model, ``llama-guard-native`` for a served Llama Guard model.
        model: the judge model's name on the server.
        base_url: any OpenAI-compatible endpoint.
        api_key_env: environment variable holding the key (None for a local server without auth).
        concurrency: parallel judge requests.
        max_retries: retries of a failed request after the first attempt.
        timeout_s: per-attempt timeout in seconds.
        requests_per_second: client-side rate limit (None: no limit).
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str
    model: str = "gpt-4o"
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str | None = "OPENAI_API_KEY"
    concurrency: int = Field(default=8, ge=1)
    # the chat client's own defaults
    max_retries: int = Field(default=5, ge=0)
    timeout_s: float = Field(default=60.0, gt=0)
    requests_per_second: float | None = Field(default=None, gt=0)

    @model_serializer(mode="wrap")
    def _omit_default_client_settings(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # These settings came after runs were recorded; left out at their defaults, a config that does not set
        # them dumps, and so hashes, as before, and those runs still resume.
        return _without_defaults(self, handler(self), _CLIENT_SETTINGS)


def _without_defaults(model: BaseModel, data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """``data`` (``model``'s dump) less the ``names`` whose value is the field's default."""
    for name in names:
        if getattr(model, name) == type(model).model_fields[name].default:
            data.pop(name, None)
    return data


class EvalConfig(JobConfig):
    """``visalign eval --config FILE``: systems x benchmarks, generation settings and judges."""

    title: str = "visalign evaluation"
    systems: list[SystemConfig] = Field(min_length=1)
    benchmarks: list[BenchmarkConfig] = Field(min_length=1)
    max_new_tokens: int = Field(default=128, ge=1)
    batch_size: int = Field(default=16, ge=1)
    refusal_judge: str = DEFAULT_REFUSAL_JUDGE
    llm_judges: list[LlmJudgeConfig] = Field(default_factory=list)
    seed: int = 0

    @model_validator(mode="after")
    def _unique_names(self) -> EvalConfig:
        for kind, names in (("system", [s.name for s in self.systems]),
                            ("benchmark", [b.display_name for b in self.benchmarks])):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"duplicate {kind} name(s): {', '.join(duplicates)}; give each a distinct label")
        judges = [j.name for j in self.llm_judges]
        duplicates = sorted({n for n in judges if judges.count(n) > 1})
        if duplicates:
            # records keep one verdict per judge name: a second judge of that name would overwrite the first's
            raise ValueError(f"duplicate LLM judge name(s): {', '.join(duplicates)}; each judge's verdicts are stored "
                             "under its name, so list each judge once (compare judge models in separate runs)")
        return self

    def hashed_settings(self) -> dict[str, Any]:
        """The config as JSON without the systems' ``dtype``: what a run's manifest hashes and a resume compares.

        A local system's precision is pinned by what it resolves to on the machine (``system:<name>:dtype`` and
        ``:device``, see :mod:`visalign.evaluation.pinned_inputs`), not by how the config spells it: ``auto`` on
        a CPU and ``float32`` are the same run, and naming the dtype a run began with lets it resume.
        """
        data = self.model_dump(mode="json")
        for system in data["systems"]:
            system.pop("dtype", None)
        return data
