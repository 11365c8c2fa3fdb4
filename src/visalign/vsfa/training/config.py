"""The VSFA training job's config: model, data, LoRA, optimiser, schedule, checkpoints and logging."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from visalign.config import JobConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class TrainDataConfig(_Section):
    """Which visual QA set to train on (LLaVA or ShareGPT JSON/JSONL, or VLGuard's train.json)."""

    path: Path = Field(description="llava.json / sharegpt.json (a JSON list) or a .jsonl file of records")
    format: Literal["auto", "llava", "sharegpt", "vlguard"] = Field(
        default="auto", description="record format; auto detects it per record from its keys"
    )
    image_root: Path | None = Field(default=None, description="base of relative image paths; default: the data folder")
    limit: int | None = Field(default=None, ge=1, description="use only the first N examples")
    on_bad_record: Literal["error", "skip"] = Field(
        default="error", description="error: stop at the first bad record; skip: write it to bad_records.jsonl"
    )


class LoraConfig(_Section):
    """LoRA adapters on the language model; the vision tower is always frozen."""

    rank: int = Field(default=16, ge=1)
    alpha: float = Field(default=32.0, gt=0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: Literal["all-linear"] | list[str] = Field(
        default="all-linear",
        description="all-linear: every nn.Linear of the language model; or leaf names such as [q_proj, v_proj]",
    )
    train_projector: bool = Field(default=False, description="also train the projector (fully, not LoRA)")


class OptimConfig(_Section):
    """AdamW, gradient clipping and the learning-rate schedule."""

    lr: float = Field(default=2e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0, description="clip gradients to this norm; null: no clip")
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int | None = Field(default=None, ge=0, description="overrides warmup_ratio when set")
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    fused: bool | None = Field(default=None, description="fused AdamW kernel; default: on CUDA only")


class LoggingConfig(_Section):
    """Where loss, learning rate, gradient norm and tokens/s go (always also metrics.jsonl in the run dir)."""

    every: int = Field(default=1, ge=1, description="log every N optimiser steps")
    progress: bool = True
    tensorboard: bool | None = Field(
        default=None, description="None: use TensorBoard when installed; true: require it; false: off"
    )
    wandb_project: str | None = Field(default=None, description="log to Weights & Biases under this project")
    wandb_run_name: str | None = None


# Settings that change how a run is watched and saved, never the weights it trains: a resumed run may change them.
UNHASHED_SETTINGS = frozenset({"logging", "checkpoint_every", "keep_checkpoints"})


class VsfaTrainConfig(JobConfig):
    """Everything ``visalign vsfa train`` needs. Paths are relative to the working directory."""

    name: str = "vsfa-train"
    model: str = Field(default="default", description="default, a checkpoint folder or a hub id")
    data: TrainDataConfig
    lora: LoraConfig = Field(default_factory=LoraConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    seed: int = 0
    epochs: int = Field(default=1, ge=1)
    max_steps: int | None = Field(default=None, ge=1, description="stop after this many optimiser steps")
    batch_size: int = Field(default=4, ge=1, description="examples per micro-batch per process")
    grad_accum: int = Field(default=1, ge=1, description="micro-batches per optimiser step")
    group_by_length: bool = Field(default=True, description="batch examples of similar length (less padding)")
    checkpoint_every: int = Field(default=100, ge=1, description="save a resumable checkpoint every N steps")
    keep_checkpoints: int = Field(default=2, ge=1, description="how many recent checkpoints to keep")
    gradient_checkpointing: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="weights dtype; auto: bfloat16 on GPU, float32 on CPU"
    )
    attn_implementation: str | None = Field(default=None, description="sdpa, eager, flash_attention_2 ...")
    compile: bool = Field(
        default=False, description="torch.compile each decoder layer of the language model and each vision block"
    )
    autocast: bool | None = Field(
        default=None,
        description="run each step under torch.autocast in the weights' dtype, so the float32 LoRA matrices "
        "(peft keeps adapters in float32) multiply in bfloat16/float16 while their weights, gradients and "
        "optimiser state stay float32; default: on for bfloat16/float16 weights on a GPU",
    )
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    def hashed_settings(self) -> dict[str, Any]:
        """The config as JSON without :data:`UNHASHED_SETTINGS`: what resume compares and the run manifest hashes."""
        return self.model_dump(mode="json", exclude=set(UNHASHED_SETTINGS))

    def unhashed_settings(self) -> dict[str, Any]:
        """The settings a resumed run may change (logging, checkpoint frequency and retention), as JSON."""
        return self.model_dump(mode="json", include=set(UNHASHED_SETTINGS))

    def config_hash(self) -> str:
        """Return a short stable hash of :meth:`hashed_settings`: what the trained weights depend on.

        Turning TensorBoard on or keeping more checkpoints for a re-run must not make it refuse to resume.
        """
        payload = json.dumps(self.hashed_settings(), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    @model_validator(mode="after")
    def _targets_not_empty(self) -> VsfaTrainConfig:
        if isinstance(self.lora.target_modules, list) and not self.lora.target_modules:
            raise ValueError("lora.target_modules is empty; use 'all-linear' or name at least one module")
        return self
