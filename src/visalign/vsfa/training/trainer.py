"""The training loop: LoRA on the language model, loss on assistant tokens, resumable, one or many GPUs.

Multi-GPU needs no code change: ``accelerate launch`` sets the environment that ``Accelerator()`` reads (DDP,
FSDP or DeepSpeed from its config file); each process takes its slice of every global batch from the batch plan.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from transformers import get_scheduler

from visalign.errors import VisalignError
from visalign.models import VLM, load_vlm, scored_token_count, weights_fingerprint
from visalign.models.adapter import InputRules
from visalign.models.identity import processor_template_identity
from visalign.models.loading import input_rules
from visalign.out_of_memory import GPU_MEMORY, failed_allocation, memory_exhausted
from visalign.runs import RunDir, atomic_write_text, releases_run_locks
from visalign.vsfa.training.artefact import save_adapter
from visalign.vsfa.training.batching import BatchPlan
from visalign.vsfa.training.checkpoint import (
    adopt_pre_split_hashes,
    check_resumable,
    checkpoint_folders,
    continued_config,
    latest_checkpoint,
    load_checkpoint,
    remove_staging_folders,
    save_checkpoint,
    write_failed,
)
from visalign.vsfa.training.compilation import compile_blocks
from visalign.vsfa.training.config import VsfaTrainConfig
from visalign.vsfa.training.dataset import Example, TrainingSet, load_training_set
from visalign.vsfa.training.lora import apply_lora, set_train_mode
from visalign.vsfa.training.metrics import MetricsLogger, check_logging_backends, read_metrics

ADAPTER_DIR = "adapter"
# Length estimate of one image in tokens, for length grouping only (examples mostly have the same image count).
_IMAGE_TOKENS_ESTIMATE = 256
_SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


@dataclass
class TrainResult:
    """What a finished run produced.

    Attributes:
        out: the run directory.
        adapter: the saved adapter folder.
        steps: optimiser steps of the run.
        resumed_from: the step this invocation started at (0: a fresh run).
        final_loss: loss of the last step (None when nothing was logged).
        data_hash: sha256 of the data file and its images.
        examples: training examples read.
        bad_records: records skipped (``data.on_bad_record: skip``; listed in ``bad_records.jsonl``).
        vlm: the trained model (adapters in place, eval mode), for use in the same process.
    """

    out: Path
    adapter: Path
    steps: int
    resumed_from: int
    final_loss: float | None
    data_hash: str
    examples: int
    bad_records: int
    vlm: VLM = field(repr=False)


class LabelledLoss(torch.nn.Module):
    """Wraps the model so that DDP/FSDP/DeepSpeed see one forward: the loss at the labelled positions only.

    With ``autocast_dtype``, the forward runs under ``torch.autocast`` (the backward follows the recorded dtypes).
    ``image_params``: trainable parameters that only images reach (the projector with ``lora.train_projector``);
    a batch without images still gives them a zero gradient (see :meth:`forward`).
    """

    def __init__(
        self, vlm: VLM, autocast_dtype: torch.dtype | None = None, image_params: Sequence[torch.nn.Parameter] = ()
    ) -> None:
        super().__init__()
        self.model = vlm.model
        self._vlm = vlm
        self._autocast_dtype = autocast_dtype
        self._image_params = list(image_params)  # a plain list: they are already registered under ``model``
        # FSDP's transformer-based wrap reads its units (decoder layers, vision blocks) from the module it is given,
        # and fails on a listed class the model lacks (LLaVA lists CLIP's text embeddings): keep those present.
        present = {type(module).__name__ for module in vlm.model.modules()}
        listed = getattr(vlm.model, "_no_split_modules", None) or ()
        self._no_split_modules = [name for name in listed if name in present]

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the batch's labelled tokens (see :meth:`VLM.loss`)."""
        if self._autocast_dtype is None:
            loss = self._vlm.loss(batch)
        else:
            with torch.autocast(self._vlm.device.type, dtype=self._autocast_dtype):
                loss = self._vlm.loss(batch)
        if self._image_params and "pixel_values" not in batch:
            # DDP expects a gradient for every trainable parameter from every process; a text-only micro-batch
            # leaves the projector without one on this process only, and the processes' reductions then disagree
            # (gloo aborts, NCCL hangs). A zero-weighted term gives it an exact zero gradient at the cost of one
            # sum over the projector; find_unused_parameters=True would instead walk the autograd graph after
            # every forward of every step, images or not.
            loss = loss + 0.0 * sum(p.sum() for p in self._image_params)
        return loss


def autocast_dtype(config: VsfaTrainConfig, vlm: VLM) -> torch.dtype | None:
    """The dtype the training step autocasts to, or None (see ``VsfaTrainConfig.autocast``).

    Raises:
        VisalignError: ``autocast: true`` with float32 weights (there is nothing lower to compute in).
    """
    weights = vlm.model.dtype
    half = weights in (torch.bfloat16, torch.float16)
    if config.autocast is None:
        return weights if half and vlm.device.type == "cuda" else None
    if config.autocast and not half:
        raise VisalignError(f"autocast: true needs bfloat16 or float16 weights, but they are {weights}; "
                            "set dtype: bfloat16 or drop autocast")  # fmt: skip
    return weights if config.autocast else None


def weights_dtype(config: VsfaTrainConfig, device: torch.device) -> torch.dtype:
    """The dtype the weights load in: ``config.dtype``, or for ``auto`` float32 on a CPU and bfloat16 on a GPU.

    Resolved here rather than left to ``load_vlm`` (whose default is the same), so that a resume compares it with
    the dtype the checkpoint recorded before the weights load.
    """
    if config.dtype != "auto":
        return getattr(torch, config.dtype)
    return torch.float32 if device.type == "cpu" else torch.bfloat16


def _load_model(config: VsfaTrainConfig, accelerator: Accelerator, dtype: torch.dtype) -> VLM:
    vlm = load_vlm(config.model, dtype=dtype, device=str(accelerator.device),
                   attn_implementation=config.attn_implementation)  # fmt: skip
    if config.gradient_checkpointing:
        vlm.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return vlm


def unfit_for_model(rules: InputRules, example: Example) -> str | None:
    """Why the model cannot train on ``example``, or None; from its text and image sizes, before any weights load.

    The processor would refuse the same inputs at the step that first meets them (an image placeholder typed as
    text, an aspect ratio Qwen cannot resize, a second image for a one-image family); a special token typed as
    text (``</s>``, ``<|im_end|>``) would train as that control token.
    """
    problem = rules.image_count_problem(len(example.image_paths))
    for turn in example.turns:
        problem = problem or rules.text_problem(turn.role, turn.text, special_tokens=True)
    for width, height in example.image_sizes:
        problem = problem or rules.image_size_problem(width, height)
    return problem


def _image_params(vlm: VLM) -> list[torch.nn.Parameter]:
    """The trainable parameters under the projector(s): the ones a batch without images leaves without gradient."""
    prefixes = tuple(path + "." for path in vlm.family.modules.projectors)
    return [p for name, p in vlm.model.named_parameters() if p.requires_grad and name.startswith(prefixes)]


def _recorded_base(spec: str) -> str:
    """The base model as the adapter's sidecar records it: a local folder as an absolute path.

    Configs name folders relative to the working directory; recorded as written, the adapter would not find its
    base from any other directory (and ``ckpt/llava`` would then be read as a hub id). ``default`` and hub ids
    stay as they are.
    """
    path = Path(spec).expanduser()
    return os.path.abspath(path) if spec != "default" and path.exists() else spec


def _lengths(vlm: VLM, examples: list[Example]) -> list[int]:
    """Approximate token counts for length grouping: the texts' tokens plus a fixed cost per image."""
    texts = ["\n".join(turn.text for turn in e.turns) for e in examples]
    counts = [len(ids) for ids in vlm.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return [c + _IMAGE_TOKENS_ESTIMATE * len(e.image_paths) for c, e in zip(counts, examples, strict=True)]


def _optimizer(params: list[torch.nn.Parameter], config: VsfaTrainConfig, device: torch.device):
    fused = config.optim.fused if config.optim.fused is not None else device.type == "cuda"
    return torch.optim.AdamW(params, lr=config.optim.lr, betas=config.optim.betas, eps=config.optim.eps,
                             weight_decay=config.optim.weight_decay, fused=fused or None)  # fmt: skip


def _warmup_steps(config: VsfaTrainConfig, total: int) -> int:
    if config.optim.warmup_steps is not None:
        return config.optim.warmup_steps
    return math.ceil(config.optim.warmup_ratio * total)


def oom_advice(config: VsfaTrainConfig, memory: str = GPU_MEMORY, exc: BaseException | None = None) -> str:
    """Concrete ways out of an out-of-memory error in a training step for this config.

    Args:
        config: the job config.
        memory: what ran out, as :func:`visalign.out_of_memory.memory_exhausted` names it.
        exc: the error, for the size of the allocation that failed.
    """
    failed = failed_allocation(exc) if exc is not None else None
    detail = f" ({failed})" if failed else ""
    tips = []
    if config.batch_size > 1:
        tips.append(f"batch_size: {max(1, config.batch_size // 2)} with grad_accum: {config.grad_accum * 2} "
                    "(same effective batch)")  # fmt: skip
    if not config.gradient_checkpointing:
        tips.append("gradient_checkpointing: true (about half the activation memory, ~30% slower)")
    if config.dtype in ("auto", "float32") and memory == GPU_MEMORY:
        tips.append("dtype: bfloat16")
    elif config.dtype in ("auto", "float32"):  # auto is float32 on a CPU
        tips.append("dtype: bfloat16 (half the memory of float32; slower on most CPUs)")
    if config.lora.train_projector:
        tips.append("lora.train_projector: false")
    tips.append("shorter examples or smaller images (max_pixels in the processor)")
    if memory == GPU_MEMORY:
        tips.append("shard the model over GPUs: accelerate launch --config_file configs/accelerate/fsdp.yaml")
        return f"CUDA out of memory{detail}; try " + "; ".join(tips)
    tips.append("close other programs, or train on a machine with more RAM or a GPU")
    return f"CPU RAM ran out{detail}; try " + "; ".join(tips)


def _load_oom_message(config: VsfaTrainConfig, memory: str, failed: str | None, dtype: torch.dtype, out: Path) -> str:
    """The one-line error for memory that ran out while the model loaded: no step ran, so no batch tip helps.

    ``failed`` is :func:`visalign.out_of_memory.failed_allocation` of the error.
    """
    name = str(dtype).removeprefix("torch.")
    tips = ["dtype: bfloat16 (half the memory of float32)"] if dtype == torch.float32 else []
    if memory == GPU_MEMORY:
        tips.append("shard the model over GPUs: accelerate launch --config_file configs/accelerate/fsdp.yaml")
        tips.append("a GPU with more memory")
    else:
        tips.append("close other programs, or train on a machine with more RAM or a GPU")
    kept = _kept(out, "the same command resumes from it; a changed config trains into a new --out directory",
                 open_files=False)
    return (f"{memory} ran out while loading the model {config.model} in {name}{f' ({failed})' if failed else ''}; try "
            f"{'; '.join(tips)}; training did not start, {kept}")  # fmt: skip


def _kept(out: Path, note: str, *, open_files: bool = True) -> str:
    """Where a stopped run's finished work is, with ``note`` on what it is good for, for its error message.

    ``open_files=False`` (memory that ran out): the newest checkpoint with its ``state.json``, without opening its
    files to check them (:func:`latest_checkpoint` loads them, which needs the memory that is short; a checkpoint
    reaches its name whole, see ``save_checkpoint``).
    """
    if open_files:
        kept = latest_checkpoint(out)
    else:
        kept = next((p for p in reversed(checkpoint_folders(out)) if (p / "state.json").is_file()), None)
    if kept is None:
        return "no checkpoint was written yet"
    return f"the last good checkpoint is {kept} ({note})"


def _non_finite_message(
    what: str, step: int, config: VsfaTrainConfig, weights: torch.dtype, out: Path, *, clipping_helps: bool = True
) -> str:
    """The error for a non-finite loss, gradient or update: advice that works.

    The same config fails the same way at the same step (the batch plan and the RNG are seeded), and a changed
    config does not resume in ``out`` (its hash differs), so the way on is a changed config in a new directory.
    """
    tips = [f"lower optim.lr (now {config.optim.lr:g})"]
    if config.optim.max_grad_norm is None and clipping_helps:
        tips.append("set optim.max_grad_norm: 1.0")
    if weights == torch.float16:
        tips.append("use dtype: bfloat16 instead of float16")
    kept = _kept(out, "it resumes only this config, which fails the same way again")
    return (f"non-finite {what} at step {step}; training stopped, {kept}; {' or '.join(tips)}, and train into a "
            "new --out directory")  # fmt: skip


def _save_failure_message(folder: Path, exc: BaseException, out: Path) -> str:
    """The one-line error for a checkpoint or adapter save that could not write (a full or read-only disk)."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    kept = latest_checkpoint(out)
    resume = f"it resumes from {kept}" if kept is not None else "no checkpoint was written yet, so it starts again"
    return (f"{folder}: saving failed ({reason}); the disk may be full or not writable; free space and re-run the "
            f"same command: {resume}")  # fmt: skip


class _NonFinite(Exception):
    """A non-finite loss, gradient norm or update; ``clipping_helps`` says whether gradient clipping would help."""

    def __init__(self, what: str, *, clipping_helps: bool = True) -> None:
        super().__init__(what)
        self.clipping_helps = clipping_helps


class _BadInput(Exception):
    pass


def _micro_batch_inputs(vlm: VLM, micro: list[Example]) -> dict[str, torch.Tensor]:
    """The model inputs of one micro-batch; an input the model layer refuses names the micro-batch's records.

    The checks before step 1 (:func:`unfit_for_model`) should leave nothing to refuse here; this is the backstop
    for whatever they cannot see (an image replaced since, a processor rule they do not know).
    """
    try:
        return vlm.training_inputs([example.conversation() for example in micro])
    except VisalignError as exc:
        records = ", ".join(f"id {example.id} ({example.source})" for example in micro)
        raise _BadInput(f"{exc} [in the micro-batch of record(s) {records}]") from None


def _optimizer_step(optimizer) -> None:
    """``optimizer.step()``; an update too large for the weights' dtype is a non-finite update, as a loss is.

    AdamW divides ``lr`` by its bias correction (0.1 at step 1 with the default betas), so from about
    ``lr = 3.4e37`` the step size overflows float32: the for-loop and foreach AdamW raise a RuntimeError then,
    where the fused one writes inf weights, which the check after the step (:func:`_weights_finite`) stops.
    """
    try:
        optimizer.step()
    except RuntimeError as exc:
        if "without overflow" not in str(exc):
            raise
        # AdamW's update is about lr whatever the gradient's size: clipping cannot shrink it
        raise _NonFinite("AdamW update (its step size overflows the weights' dtype)", clipping_helps=False) from None


def _weights_finite(optimizer, accelerator: Accelerator) -> bool:
    """Whether every trainable parameter is finite on every process (each process decides the same way).

    A LoRA-sized check after each optimiser step. It is a collective, as the loss check's reduce is: each
    process's verdict is summed over the processes, so all of them stop together or none does (under FSDP or
    DeepSpeed each process checks its own shards).

    One ``torch._foreach_norm`` per device and dtype (one multi-tensor launch on a GPU, as ``clip_grad_norm_``
    does) rather than an ``isfinite(...).all()`` per tensor: a 7B LoRA has 392 tensors, and 392 pairs of tiny
    kernels cost more than the reads. A NaN or inf weight gives a non-finite norm; so do weights so large that
    their float32 norm overflows (one value of 2e19, or 3e16 across the 303,104 values of a 7B LoRA's largest
    tensor), which a huge ``lr`` leaves behind without any inf, and which overflow the next forward anyway.
    """
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            local = param.detach()
            local = local.to_local() if hasattr(local, "to_local") else local  # FSDP2's DTensor: this shard
            if local.numel():
                groups.setdefault((local.device, local.dtype), []).append(local)
    bad = torch.zeros((), device=accelerator.device)
    for (_, dtype), tensors in groups.items():
        # float32 norms of half weights: float16's norm overflows at 65504, long before any weight does
        wider = torch.float32 if dtype in (torch.float16, torch.bfloat16) else None
        norms = torch.stack(torch._foreach_norm(tensors, 2.0, dtype=wider))
        bad += (~torch.isfinite(norms).all()).to(bad.device, torch.float32)
    return accelerator.reduce(bad, reduction="sum").item() == 0


def _run_step(
    loss_module, micro_batches: list[list[Example]], *, vlm: VLM, accelerator: Accelerator, optimizer,
    params: list[torch.nn.Parameter], max_grad_norm: float | None, image_params: Sequence[torch.nn.Parameter] = (),
) -> dict[str, float]:
    """One optimiser step over ``grad_accum`` micro-batches of this process; return loss, grad norm, tokens.

    The step's loss is the mean over every labelled token of the step, on every process: each micro-batch's
    mean is weighted by its share of those tokens. Averaging micro-batch means instead would weight a token of a
    short micro-batch above one of a long micro-batch, so accumulation and data parallelism would train a
    different objective from one large batch.

    ``image_params`` (see :class:`LabelledLoss`) get zero gradients from image-less micro-batches; when no
    micro-batch of the step has an image on any process, those are dropped before the optimiser step, so AdamW
    leaves the projector alone as it does for a parameter without gradient (and as one process always did).
    """
    batches = [_micro_batch_inputs(vlm, micro) for micro in micro_batches]
    counts = [scored_token_count(batch["labels"]) for batch in batches]
    with_images = sum("pixel_values" in batch for batch in batches)
    totals = accelerator.reduce(torch.tensor([sum(counts), with_images], device=accelerator.device), reduction="sum")
    step_labelled, step_with_images = totals.tolist()
    # accelerate divides each backward by the accumulation steps, DDP/FSDP/DeepSpeed average over processes:
    # undo both, so the gradient is the sum over the step's tokens divided by their count
    weight = accelerator.num_processes * len(batches) / step_labelled
    loss_sum, tokens = 0.0, 0
    grad_norm = torch.tensor(0.0)
    for batch, count in zip(batches, counts, strict=True):
        tokens += int(batch["attention_mask"].sum())
        with accelerator.accumulate(loss_module):
            loss = loss_module(**batch)
            summed = accelerator.reduce(loss.detach() * count, reduction="sum")
            if not torch.isfinite(summed):
                raise _NonFinite(f"loss {summed.item() / step_labelled}")
            loss_sum += summed.item()
            accelerator.backward(loss * (count * weight))
            if accelerator.sync_gradients:
                if not step_with_images:
                    for param in image_params:
                        param.grad = None
                grad_norm = accelerator.clip_grad_norm_(params, max_grad_norm or float("inf"))
                if not torch.isfinite(grad_norm):
                    raise _NonFinite(f"gradient norm {grad_norm.item()}")
            _optimizer_step(optimizer)
            if accelerator.sync_gradients and not _weights_finite(optimizer, accelerator):
                # the update overflowed without a RuntimeError (fused AdamW; or any AdamW with a huge lr): stop
                # before the step's checkpoint or the adapter is written with inf/NaN weights, or weights whose
                # float32 norm overflows
                raise _NonFinite("weights after the AdamW update (its step overflowed the weights' dtype)",
                                 clipping_helps=False)  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
    total_tokens = accelerator.reduce(torch.tensor(tokens, device=accelerator.device), reduction="sum")
    return {"loss": loss_sum / step_labelled, "grad_norm": float(grad_norm), "tokens": int(total_tokens)}


def _resumed_loss(out: Path, checkpoint: Path | None, step: int) -> float | None:
    """The loss of the step a run resumes at: its metrics line, else the checkpoint's record of it."""
    logged = next((m["loss"] for m in reversed(read_metrics(out)) if m["step"] == step), None)
    if logged is not None or checkpoint is None:
        return logged
    return json.loads((checkpoint / "state.json").read_text()).get("loss")  # None from checkpoints before 2026-11


def _write_bad_records(out: Path, training_set: TrainingSet) -> None:
    if training_set.bad_records:
        lines = "".join(json.dumps(record) + "\n" for record in training_set.bad_records)
        atomic_write_text(out / "bad_records.jsonl", lines)


@releases_run_locks
def train(
    config: VsfaTrainConfig, out: str | Path, *, on_step: Callable[[dict[str, Any]], None] | None = None
) -> TrainResult:
    """Fine-tune ``config.model`` with LoRA on ``config.data``; resume from ``out`` if it holds a checkpoint.

    Writes ``out/manifest.json``, ``metrics.jsonl`` (one line per step: loss, lr, grad_norm, tokens,
    tokens_per_s), ``checkpoints/step-N/`` every ``checkpoint_every`` steps and at the end, ``adapter/``
    (peft files + ``visalign_adapter.json``), TensorBoard events under ``tensorboard/`` and a summary.

    Args:
        config: the job config.
        out: the run directory; re-run with the same config to resume.
        on_step: called on the main process after each step (and its checkpoint) with that step's metrics.

    Returns:
        A :class:`TrainResult` with the trained model.

    Raises:
        VisalignError: bad data (including records the model cannot take), a config, training data, base weights,
            chat template, weights dtype, device type or process count that differ from the run's checkpoint, a
            non-finite loss (the last good checkpoint is kept and named), an input the model refuses during a step
            (naming its records), or GPU memory or CPU RAM that ran out while the model loaded or in a step (with
            advice and the checkpoint a re-run resumes from).
    """
    out = Path(out)
    check_logging_backends(config.logging)
    accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum)
    # The model's config and processor only (a hub id's too: a mistyped ``models/qwen7b`` reads as one), so the
    # data is checked against what the model takes, and a mistyped model leaves no run folder behind.
    rules = input_rules(config.model)
    training_set = load_training_set(
        config.data.path, fmt=config.data.format, image_root=config.data.image_root, limit=config.data.limit,
        on_bad_record=config.data.on_bad_record, check=lambda example: unfit_for_model(rules, example),
    )
    # LoRA weights fit only the base weights they were trained on (None for a hub id: nothing local to hash).
    # Before the manifest: a mistyped model folder must not leave a run folder that the corrected config can't use.
    base_fingerprint = weights_fingerprint(config.model)
    # What the steps depend on that the config hash cannot see: the chat template and tokenizer that build the
    # labels, and the dtype and device type (``dtype: auto`` resolves per machine).
    template = processor_template_identity(rules.processor, config.model)
    dtype = weights_dtype(config, accelerator.device)
    precision = {"dtype": str(dtype).removeprefix("torch."), "device_type": accelerator.device.type}
    if accelerator.is_main_process:
        # The run directory's lock before its checkpoints are read: a second job on this --out is refused here,
        # rather than resuming from the checkpoints of a job still writing them. Only the main process writes the
        # run, so only it locks; under the lock, the staging folders of a killed save can go.
        RunDir(out).lock()
        remove_staging_folders(out)
    accelerator.wait_for_everyone()  # every process reads the checkpoints as they are under the main one's lock
    resumed = latest_checkpoint(out)
    # an explicit dtype equal to the one an ``auto`` run recorded continues that run (see continued_config)
    run_config = continued_config(config, resumed)
    config_hash = run_config.config_hash()
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        adopt_pre_split_hashes(out, run_config)
        # the manifest hashes the settings resume compares; logging and checkpointing may change between runs
        RunDir(out).write_manifest(run_config.hashed_settings(), seeds={"seed": config.seed},
                                   inputs={"data": config.data.path},
                                   extra={"unhashed_settings": config.unhashed_settings(),
                                          "data_hash": training_set.data_hash,
                                          "examples": len(training_set.examples),
                                          "bad_records": len(training_set.bad_records)})  # fmt: skip
        _write_bad_records(out, training_set)
    accelerator.wait_for_everyone()
    examples = training_set.examples
    plan = BatchPlan(config.batch_size, config.grad_accum, accelerator.num_processes, config.seed,
                     config.group_by_length)  # fmt: skip
    steps_per_epoch = plan.steps_per_epoch(len(examples))
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    # what fixes each step's examples besides the config and the data: a resume must find the same
    layout = {"num_processes": accelerator.num_processes, "examples_per_step": plan.examples_per_step,
              "total_steps": total_steps}  # fmt: skip
    if resumed is not None:  # before the model loads: a refusal should not wait for a 7B load
        check_resumable(resumed, config_hash=config_hash, data_hash=training_set.data_hash, base_spec=config.model,
                        base_fingerprint=base_fingerprint, layout=layout, template=template,
                        precision=precision)  # fmt: skip

    set_seed(config.seed)
    short_of: tuple[str, str | None] | None = None  # what ran out while loading, and the allocation that failed
    try:
        vlm = _load_model(config, accelerator, dtype)
        peft_model = apply_lora(vlm, config.lora)
        set_train_mode(vlm, train_projector=config.lora.train_projector)
    except Exception as exc:
        memory = memory_exhausted(exc)
        if memory is None:
            raise
        short_of = (memory, failed_allocation(exc))
    if short_of is not None:  # out of the except clause, whose traceback holds the half-loaded weights
        raise VisalignError(_load_oom_message(config, *short_of, dtype, out))
    if config.compile:
        compile_blocks(vlm)
    params = [p for p in vlm.model.parameters() if p.requires_grad]
    optimizer = _optimizer(params, config, accelerator.device)
    scheduler = get_scheduler(_SCHEDULES[config.optim.schedule], optimizer,
                              num_warmup_steps=_warmup_steps(config, total_steps), num_training_steps=total_steps)
    # FSDP and DeepSpeed swap the parameters for their shards (and reduce whole buffers): the term is for DDP
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    image_params = [] if sharded else _image_params(vlm)
    loss_module = LabelledLoss(vlm, autocast_dtype(config, vlm), image_params)
    loss_module, optimizer = accelerator.prepare(loss_module, optimizer)

    start = 0
    if resumed is not None:
        start = load_checkpoint(resumed, model=vlm.model, optimizer=optimizer, scheduler=scheduler,
                                accelerator=accelerator, config_hash=config_hash)["step"]  # fmt: skip
    logger = (MetricsLogger(out, config.logging, config.model_dump(mode="json"), total_steps=total_steps,
                            start_step=start) if accelerator.is_main_process else None)  # fmt: skip
    lengths = _lengths(vlm, examples)
    epoch_cache: dict[int, list] = {}
    state = {"config_hash": config_hash, "data_hash": training_set.data_hash, "base_fingerprint": base_fingerprint,
             "template": template, **precision, **layout}  # fmt: skip
    last_loss = _resumed_loss(out, resumed, start)
    try:
        for step in range(start + 1, total_steps + 1):
            epoch, in_epoch = divmod(step - 1, steps_per_epoch)
            if epoch not in epoch_cache:
                epoch_cache = {epoch: plan.epoch(lengths, epoch)}
            window = epoch_cache[epoch][in_epoch * config.grad_accum : (in_epoch + 1) * config.grad_accum]
            micro_batches = [[examples[i] for i in per_rank[accelerator.process_index]] for per_rank in window]
            started = time.perf_counter()
            out_of_memory: str | None = None
            try:
                metrics = _run_step(loss_module, micro_batches, vlm=vlm, accelerator=accelerator,
                                    optimizer=optimizer, params=params, max_grad_norm=config.optim.max_grad_norm,
                                    image_params=image_params)  # fmt: skip
            except _NonFinite as exc:
                raise VisalignError(
                    _non_finite_message(str(exc), step, config, vlm.model.dtype, out, clipping_helps=exc.clipping_helps)
                ) from None
            except _BadInput as exc:
                # a fixed or removed record changes the data hash, which this --out then refuses to resume
                kept = _kept(out, "it resumes only with the data unchanged")
                raise VisalignError(f"step {step}: {exc}; training stopped, {kept}; fix or remove the record and "
                                    "train into a new --out directory") from None
            except Exception as exc:
                memory = memory_exhausted(exc)
                if memory is None:
                    raise
                out_of_memory = oom_advice(config, memory, exc)
            if out_of_memory is not None:
                # Out of the except clause, whose traceback holds the step's tensors: looking at the checkpoints
                # (their files are mapped) needs memory. Each tip changes the config hash, which this --out
                # refuses: only the same command resumes here.
                kept = _kept(out, "the same command resumes from it; a changed config trains into a new --out "
                                  "directory", open_files=False)  # fmt: skip
                raise VisalignError(f"{out_of_memory}; stopped at step {step}, {kept}")
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            elapsed = time.perf_counter() - started
            metrics = {"step": step, "epoch": epoch, **metrics, "lr": lr,
                       "tokens_per_s": metrics["tokens"] / elapsed if elapsed > 0 else 0.0}  # fmt: skip
            last_loss = metrics["loss"]
            # The line is written (and flushed) before the checkpoint is renamed into place: a kill in between
            # leaves a line past the newest checkpoint, which the resumed run drops and logs again, never a gap.
            if logger is not None:
                logger.log(metrics)
            if step % config.checkpoint_every == 0 or step == total_steps:
                try:
                    save_checkpoint(out, step, model=vlm.model, optimizer=optimizer, scheduler=scheduler,
                                    state={**state, "epoch": epoch, "loss": last_loss}, accelerator=accelerator,
                                    keep=config.keep_checkpoints)  # fmt: skip
                except Exception as exc:
                    if not write_failed(exc):
                        raise
                    if accelerator.is_main_process:
                        remove_staging_folders(out)  # under the run's lock: the failed save's part frees its space
                    raise VisalignError(_save_failure_message(out / "checkpoints", exc, out)) from None
            if on_step is not None and accelerator.is_main_process:
                on_step(metrics)
    finally:
        if logger is not None:
            logger.close()

    adapter = out / ADAPTER_DIR
    gathered = None
    if sharded:
        full = accelerator.get_state_dict(loss_module)  # collective: every process takes part
        gathered = {"base_model." + k: v for k, v in full.items()}
    if accelerator.is_main_process:
        try:
            save_adapter(peft_model, adapter, {
                "base_model": _recorded_base(config.model),
                "base_fingerprint": base_fingerprint,
                "base_template": template,
                "family": vlm.family.model_type,
                **precision,  # what dtype: auto resolved to, and where
                "data": {"path": str(config.data.path), "hash": training_set.data_hash,
                         "examples": len(examples)},
                "config": run_config.model_dump(mode="json"),
                "config_hash": config_hash,
                "steps": total_steps,
                "final_loss": last_loss,
                }, state_dict=gathered)  # fmt: skip
        except Exception as exc:
            if not write_failed(exc):
                raise
            shutil.rmtree(adapter.with_name(adapter.name + ".tmp"), ignore_errors=True)  # save_adapter's staging
            raise VisalignError(_save_failure_message(adapter, exc, out)) from None
    accelerator.wait_for_everyone()
    vlm.model.eval()
    return TrainResult(out=out, adapter=adapter, steps=total_steps, resumed_from=start, final_loss=last_loss,
                       data_hash=training_set.data_hash, examples=len(examples),
                       bad_records=len(training_set.bad_records), vlm=vlm)  # fmt: skip
