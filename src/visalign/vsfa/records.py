"""The typed records each stage reads and writes (one JSON object per line, keyed by a stable id)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Abstract(BaseModel):
    """One paper abstract from the corpus; ``id`` is the source's id or a hash of the normalised text."""

    id: str
    title: str = ""
    abstract: str
    categories: list[str] = Field(default_factory=list)


class Scene(BaseModel):
    """One concrete, depictable scene; the schema the scene prompt asks the LLM to fill.

    Text is stripped before the length checks, so a blank title or a list of blank objects is a malformed answer
    (re-asked), never a stored scene that the images stage cannot draw.
    """

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    title: str = Field(min_length=2, max_length=120)
    description: str = Field(min_length=20, max_length=1200)
    setting: str = Field(min_length=2, max_length=200)
    objects: list[str] = Field(min_length=1, max_length=12)
    colours: list[str] = Field(default_factory=list, max_length=8)
    layout: str = Field(default="", max_length=400, description="one sentence on where things are")

    @field_validator("objects", "colours", mode="before")
    @classmethod
    def _drop_blank(cls, values: object) -> object:
        """Drop blank entries before ``min_length`` is checked (an "after" validator ran too late for that)."""
        if not isinstance(values, list):
            return values  # not a list: left to the type check, which names the field
        return [v for v in values if not (isinstance(v, str) and not v.strip())]


class SceneBatch(BaseModel):
    """The JSON object the scene prompt asks for: ``{"scenes": [...]}``."""

    model_config = ConfigDict(extra="ignore")

    scenes: list[Scene] = Field(min_length=1)


class QAPair(BaseModel):
    """One neutral question-answer pair about an image (text stripped before the length checks)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    type: str
    question: str = Field(min_length=3, max_length=500)
    answer: str = Field(min_length=1, max_length=1500)


class QABatch(BaseModel):
    """The JSON object the VQA prompt asks for: ``{"pairs": [...]}``."""

    model_config = ConfigDict(extra="ignore")

    pairs: list[QAPair] = Field(min_length=1)


class Usage(BaseModel):
    """Tokens and cost attributed to one record (summed over its attempts)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cached_calls: int = 0

    def add(self, other: Usage) -> Usage:
        """Return the sum of two usages."""
        return Usage(
            calls=self.calls + other.calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=round(self.cost_usd + other.cost_usd, 8),
            cached_calls=self.cached_calls + other.cached_calls,
        )
