"""The VSFA data job's config: which corpus, which backends, how many scenes, images and questions."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from visalign.config import JobConfig
from visalign.devices import DeviceName, DtypeName

#: The neutral question types a VQA pair may have (the paper's neutral task families).
VQA_TYPES = ("description", "objects", "counting", "colours", "spatial", "reasoning")


#: The smallest side a scene card is drawn at: below it, its margins and background blobs have no room.
SCENE_CARD_MIN_SIDE = 32


def _size_check(minimum: int) -> Callable[[str], str]:
    """A validator for ``WIDTHxHEIGHT`` with each side at least ``minimum`` pixels (a 0 side fails in a backend)."""

    def check(size: str) -> str:
        match = re.fullmatch(r"(\d+)x(\d+)", size)
        if match is None or min(int(side) for side in match.groups()) < minimum:
            raise ValueError(f"size must be WIDTHxHEIGHT in pixels, each side at least {minimum} (e.g. 448x448)")
        return size

    return check


ImageSize = Annotated[str, AfterValidator(_size_check(1))]
SceneCardSize = Annotated[str, AfterValidator(_size_check(SCENE_CARD_MIN_SIDE))]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class CorpusConfig(_Section):
    """Where abstracts come from and which ones to keep."""

    source: Literal["starter", "file"] = "starter"
    path: Path | None = None
    format: Literal["auto", "arxiv", "csv", "jsonl"] = "auto"
    categories: list[str] = Field(default_factory=list, description="keep records with any of these categories")
    keywords: list[str] = Field(default_factory=list, description="keep records whose text has any keyword")
    limit: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _file_needs_path(self) -> CorpusConfig:
        if self.source == "file" and self.path is None:
            raise ValueError("corpus.source 'file' needs corpus.path (an arXiv JSON-lines, CSV or JSONL file)")
        return self


class OpenAIChatConfig(_Section):
    """Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, SGLang, Volcengine Ark, ...)."""

    backend: Literal["openai"] = "openai"
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key_env: str | None = "OPENAI_API_KEY"
    concurrency: int = Field(default=8, ge=1)
    requests_per_second: float | None = Field(default=None, gt=0)
    max_retries: int = Field(default=5, ge=0)
    timeout_s: float = Field(default=60.0, gt=0)
    temperature: float = Field(default=0.7, ge=0)
    max_tokens: int = Field(default=1024, ge=16)
    json_mode: bool = Field(default=True, description="send response_format={'type': 'json_object'}")
    input_usd_per_mtok: float = Field(default=0.15, ge=0, description="USD per million prompt tokens")
    output_usd_per_mtok: float = Field(default=0.60, ge=0, description="USD per million completion tokens")
    image_prompt_tokens: int = Field(default=2833, ge=0, description="prompt tokens one image costs (estimates)")


class OfflineLLMConfig(_Section):
    """A local VLM loaded through :func:`visalign.models.load_vlm` (``default`` = the embedded model)."""

    backend: Literal["offline"] = "offline"
    model: str = "default"
    max_new_tokens: int = Field(default=192, ge=8)
    batch_size: int = Field(default=8, ge=1)
    dtype: DtypeName = None
    device: DeviceName = None


LLMConfig = Annotated[OpenAIChatConfig | OfflineLLMConfig, Field(discriminator="backend")]


class ScenesConfig(_Section):
    """Stage 2: abstracts -> scene descriptions."""

    per_abstract: int = Field(default=3, ge=1, le=20)
    prompt: str = "scenes_v1"
    max_attempts: int = Field(default=3, ge=1, description="tries per abstract before a failure record")
    template_fallback: bool = Field(
        default=False, description="when the LLM's JSON never validates, write templated scenes instead of failing"
    )
    llm: LLMConfig = Field(default_factory=OpenAIChatConfig)


class OpenAIImagesConfig(_Section):
    """OpenAI-style ``images/generations`` (OpenAI, Volcengine Ark Doubao Seedream, compatible servers)."""

    backend: Literal["openai"] = "openai"
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-image-1"
    api_key_env: str | None = "OPENAI_API_KEY"
    size: ImageSize = "1024x1024"
    response_format: Literal["b64_json", "url"] | None = Field(
        default="b64_json", description="null omits the field (models that always answer base64)"
    )
    send_seed: bool = Field(default=False, description="send a per-scene seed (Seedream supports it)")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="provider fields, e.g. watermark: false")
    concurrency: int = Field(default=4, ge=1)
    requests_per_second: float | None = Field(default=None, gt=0)
    max_retries: int = Field(default=5, ge=0)
    timeout_s: float = Field(default=120.0, gt=0)
    usd_per_image: float = Field(default=0.04, ge=0, description="USD per generated image")


class DiffusersConfig(_Section):
    """A local ``diffusers`` text-to-image pipeline (``pip install 'visalign[diffusers]'``)."""

    backend: Literal["diffusers"] = "diffusers"
    model: str = "stabilityai/sdxl-turbo"
    size: ImageSize = "512x512"
    steps: int = Field(default=4, ge=1)
    guidance_scale: float = Field(default=0.0, ge=0)
    device: DeviceName = None
    dtype: DtypeName = None


class SceneCardConfig(_Section):
    """Offline placeholder: the scene text drawn on a seeded generated background (not a photograph)."""

    backend: Literal["scene_card"] = "scene_card"
    size: SceneCardSize = "448x448"


ImagesBackendConfig = Annotated[OpenAIImagesConfig | DiffusersConfig | SceneCardConfig, Field(discriminator="backend")]


class ImagesConfig(_Section):
    """Stage 3: scene descriptions -> images."""

    prompt: str = "image_v1"
    generator: ImagesBackendConfig = Field(default_factory=SceneCardConfig)


class VqaConfig(_Section):
    """Stage 4: images -> neutral question-answer pairs, then the neutrality filter.

    The template fallback has two phrasings per type, so it gives at most ``2 x len(types)`` distinct pairs per
    image, fewer than ``per_image`` when few types are configured (never repeats).
    """

    per_image: int = Field(default=4, ge=1, le=len(VQA_TYPES) * 2)
    types: list[Literal["description", "objects", "counting", "colours", "spatial", "reasoning"]] = Field(
        default_factory=lambda: list(VQA_TYPES), min_length=1
    )
    prompt: str = "vqa_v1"
    max_attempts: int = Field(default=3, ge=1)
    template_fallback: bool = False
    terms: str = Field(
        default="neutrality_v4",
        description=(
            "versioned term list in vsfa/data/ (neutrality_v1: as the recorded datasets were built; "
            "v2 and v3 add words that reviews found missing; v4, the default, adds closed compounds such as "
            "'biohazard', 'cybercrime' and 'precaution'; the quickstart pins v3, which its recorded counts used)"
        ),
    )
    llm: LLMConfig = Field(default_factory=OpenAIChatConfig)


class VsfaDataConfig(JobConfig):
    """Everything ``visalign vsfa data`` needs; the YAML files in ``configs/vsfa_data_*.yaml`` fill it."""

    name: str = "vsfa-data"
    seed: int = 0
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    scenes: ScenesConfig = Field(default_factory=ScenesConfig)
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    vqa: VqaConfig = Field(default_factory=VqaConfig)
    cache_dir: Path | None = Field(
        default=None, description="response cache for paid calls; default <out>/cache (kept across resumes)"
    )
