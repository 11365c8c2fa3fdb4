"""Resumable checkpoints: trainable weights, optimiser, scheduler, RNG states and the step reached.

``checkpoints/step-00000012/`` holds ``trainable.safetensors`` (only the parameters that train: LoRA, and the
projector when it trains), ``optimizer.pt``, ``scheduler.pt``, one ``rng-<rank>.pt`` per process and
``state.json`` (under FSDP / DeepSpeed, ``accelerate/`` from ``Accelerator.save_state`` holds the sharded
weights and optimiser instead). A checkpoint is written to a staging folder of its own
(``.staging-step-N-<random>``, which nothing takes for a checkpoint), flushed to disk and renamed, so a kill or a
power cut while saving leaves the previous one intact; the next run, holding the run directory's lock, deletes the
staging folders a kill left. A checkpoint damaged afterwards (a failing disk, a copy cut short) is skipped on
resume, with a warning, for the one before it. The data position is the step itself:
the batch plan is recomputed from the seed, so ``state.json`` records what else fixes it (process count, examples
per step, total steps) and a resume under another process count is refused. It also records what the config does
not fix but the steps depend on: the weights dtype ``dtype: auto`` resolved to, the device type, and the base
model's chat template identity; a resume that finds another is refused. The ``.pt`` files are read with torch's
weights-only unpickler: a run folder from elsewhere cannot run code through a planted file. Under several processes
a save that fails on one of them (a full disk, a file size limit) fails on all of them, with the same error: the
processes agree on their writes before the rename (see :func:`save_checkpoint`).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import secrets
import shutil
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from accelerate.utils import DistributedType, broadcast_object_list, gather_object
from numpy._core.multiarray import _reconstruct
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from visalign.config import JobConfig
from visalign.errors import VisalignError
from visalign.runs import RunDir, atomic_write_json, replace_dir, scrub_secrets
from visalign.runs import config_hash as runs_config_hash
from visalign.unpickling import LOAD_ERRORS, describe, refused_object
from visalign.vsfa.training.config import VsfaTrainConfig

CHECKPOINTS = "checkpoints"
_PREFIX = "step-"
# A checkpoint's folder name, exactly: ``step-N.tmp`` (the staging folder of versions before 2026-11) and the
# ``.staging-*`` folders of saves in progress are never taken for a checkpoint, nor pruned as one.
_CHECKPOINT_NAME = re.compile(r"^step-\d{8,}$")
_STAGING_PREFIX = ".staging-"
# Under these the weights and optimiser state are sharded over processes: accelerate saves and restores them.
_SHARDED = (DistributedType.FSDP, DistributedType.DEEPSPEED)
# What decoding a cut-short, zeroed or garbled checkpoint file raises: torch.load's errors (LOAD_ERRORS), json's
# ValueError, and safetensors' own error.
_DECODE_ERRORS = (*LOAD_ERRORS, ValueError, SafetensorError)

# What the .pt files may name beyond torch's weights-only allow-list of tensors and plain containers: NumPy's
# legacy RNG state in rng-<rank>.pt, a tuple whose key is a uint32 array (pickled as _reconstruct, ndarray and its
# dtype). Optimiser and scheduler states and Python's RNG state (a tuple of ints) need nothing more.
_CHECKPOINT_GLOBALS = [np.ndarray, np.dtype, np.dtypes.UInt32DType, _reconstruct]
logger = logging.getLogger(__name__)
_T = TypeVar("_T")


def checkpoint_dir(out: Path, step: int) -> Path:
    """The folder of the checkpoint at ``step``."""
    return out / CHECKPOINTS / f"{_PREFIX}{step:08d}"


def checkpoint_folders(out: Path) -> list[Path]:
    """The checkpoint folders under ``out`` (whole or not), oldest first; staging folders are not among them."""
    folder = out / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _CHECKPOINT_NAME.match(p.name) and p.is_dir())


def remove_staging_folders(out: Path) -> list[Path]:
    """Delete the staging folders that killed saves left under ``out/checkpoints``; return them.

    Call it only while holding the run directory's lock (:meth:`visalign.runs.RunDir.lock`): a live job's save in
    progress is a staging folder too.
    """
    folder = out / CHECKPOINTS
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and (
        p.name.startswith(_STAGING_PREFIX) or (p.name.startswith(_PREFIX) and p.name.endswith(".tmp"))))  # fmt: skip
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    if stale:
        logger.info("%s: removed %d unfinished checkpoint folder(s) left by an interrupted run", folder, len(stale))
    return stale


def latest_checkpoint(out: Path) -> Path | None:
    """The newest whole checkpoint under ``out`` (one with ``state.json`` whose files all open), or None.

    Checkpoints reach their final name whole and flushed to disk (:func:`save_checkpoint`), so a damaged one was
    damaged afterwards. It is skipped with a one-line warning: the run resumes from the checkpoint before it and
    takes the steps since exactly as an uninterrupted run does (the batch plan and the RNG come from the seed and the
    checkpoint), writing the damaged checkpoint's step again when it gets there.

    Raises:
        VisalignError: every checkpoint under ``out`` is damaged (the message names the newest damaged file).
    """
    folder = out / CHECKPOINTS
    complete = [p for p in reversed(checkpoint_folders(out)) if (p / "state.json").is_file()]
    damaged: list[str] = []
    for candidate in complete:
        damage = checkpoint_damage(candidate)
        if damage is None:
            if damaged:
                logger.warning("%s; resuming from the older checkpoint %s instead (the run writes the damaged one "
                               "again when it gets there)", "; ".join(damaged), candidate.name)  # fmt: skip
            return candidate
        damaged.append(damage)
    if damaged:
        raise VisalignError(
            f"{damaged[0]}, and no older checkpoint in {folder} is whole; restore the file, or delete {folder} "
            "and run the same command again to train from step 0"
        )
    return None


def checkpoint_damage(path: Path) -> str | None:
    """What is wrong with the checkpoint folder ``path`` ("<file>: ..."), or None when it looks whole.

    Cheap: it checks that the files a resume reads exist, that ``state.json`` parses and records a step, and that
    the ``.safetensors`` header and each torch (zip) file's directory that :func:`save_checkpoint` wrote is
    complete, which catches an empty, zeroed or cut-short file. It reads no tensors, so damage inside a file's data
    is left to the load, as are the files under ``accelerate/`` (their formats are accelerate's).
    """
    sharded = (path / "accelerate").is_dir()
    weights = () if sharded else ("trainable.safetensors", "optimizer.pt")  # else accelerate/ holds them
    # (a missing rng-<rank>.pt is left to load_checkpoint, whose error speaks of the process count)
    required = ("state.json", "scheduler.pt", *weights)
    for name in required:
        if not (path / name).is_file():
            return f"{path / name}: missing from the checkpoint"
    try:
        step = json.loads((path / "state.json").read_text()).get("step")
    except (OSError, ValueError, AttributeError) as exc:  # AttributeError: JSON that is not an object
        return f"{path / 'state.json'}: damaged ({describe(exc)})"
    if not isinstance(step, int):
        return f"{path / 'state.json'}: damaged (no step recorded)"
    for file in sorted(f for f in path.iterdir() if f.is_file()):
        damage = _file_damage(file)
        if damage is not None:
            return f"{file}: damaged ({damage})"
    return None


def _file_damage(file: Path) -> str | None:
    """Why ``file`` cannot be whole, judged by its format's header or directory; None when it looks whole."""
    try:
        if file.suffix == ".json":
            json.loads(file.read_text())
        elif file.suffix == ".safetensors":
            with safe_open(str(file), "pt"):  # checks that the header parses and covers the whole file
                pass
        elif file.suffix == ".pt":  # torch.save writes a zip: a cut file loses its directory at the end
            with zipfile.ZipFile(file):
                pass
    except (OSError, ValueError, SafetensorError, zipfile.BadZipFile) as exc:
        return describe(exc)
    return None


def _read(file: Path, load: Callable[[Path], _T]) -> _T:
    """``load(file)``; a file that does not decode becomes a one-line error naming it and the way on."""
    try:
        return load(file)
    except _DECODE_ERRORS as exc:
        refused = refused_object(exc)
        if refused is not None:  # not damage: a file built to run code when unpickled, or no file this code wrote
            raise VisalignError(
                f"{file}: holds Python objects a checkpoint never does ({refused}), so it was not loaded; resume "
                f"only from a run folder you trust, or {_way_on(file.parent)}"
            ) from None
        raise VisalignError(f"{file}: damaged checkpoint file ({describe(exc)}); {_way_on(file.parent)}") from None


def _way_on(checkpoint: Path) -> str:
    """How to resume past the damaged ``checkpoint``: from the newest checkpoint before it, or from step 0."""
    older = [p for p in checkpoint_folders(checkpoint.parent.parent) if p < checkpoint]
    start = f"checkpoint {max(older).name}" if older else "step 0"
    return f"delete {checkpoint} and run the same command again to resume from {start}"


def _read_state(path: Path) -> dict:
    """The checkpoint's ``state.json`` (see :func:`_read` for a damaged one)."""
    return _read(path / "state.json", lambda file: json.loads(file.read_text()))


def _torch_load(file: Path) -> Any:
    """Unpickle one of the checkpoint's ``.pt`` files: tensors, plain containers and NumPy's RNG state, nothing else.

    Run folders get shared and copied ("continue this run"), and a full unpickle runs whatever a planted file names,
    before any check could look at it. The allow-list is scoped to this load: no process-wide side effect. A file
    that needs any other global is refused (see :func:`_read`).
    """
    with torch.serialization.safe_globals(_CHECKPOINT_GLOBALS):
        return _read(file, lambda f: torch.load(f, weights_only=True))


def rng_state() -> dict[str, Any]:
    """Every random generator the training step may draw from (LoRA dropout, Python, NumPy, CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that require gradients, by name, detached and on the CPU."""
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


class CheckpointWriteError(Exception):
    """A checkpoint that could not be written on one of the processes; every process raises it, with the same text.

    The text is the failing write's first line, prefixed with ``process N:`` when there are several processes.
    """


def write_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed write: torch.save reports one as a RuntimeError, safetensors as its own error."""
    if isinstance(exc, (OSError, SafetensorError, CheckpointWriteError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        mark in text for mark in ("unexpected pos", "iostream error", "failed writing", "File too large"))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def save_checkpoint(out: Path, step: int, *, model, optimizer, scheduler, state: dict, accelerator, keep: int) -> Path:
    """Write the checkpoint of ``step`` (all processes call this) and prune all but the ``keep`` newest.

    Args:
        out: the run directory.
        step: optimiser steps done.
        model: the unwrapped model whose trainable parameters are saved.
        optimizer: the optimiser (its state is saved by the main process).
        scheduler: the learning-rate scheduler.
        state: JSON-able trainer state (config hash, epoch ...), written last.
        accelerator: the ``accelerate.Accelerator`` of the run.
        keep: checkpoints to keep.

    Raises:
        CheckpointWriteError: a write failed on one of the processes (every process raises it, with the same text,
            and the staging folder is gone); any other error is raised as it is on the process it happened on.
    """
    target = checkpoint_dir(out, step)
    # A folder of this save's own, named so that no reader takes it for a checkpoint: a fixed name would be one that
    # another process's save (or clean-up) writes or deletes too. Its name goes to every process (they write into it),
    # and so does a failure to make it, which would otherwise leave the other processes waiting for the name.
    staging_name: list[str | None] = [f"{_STAGING_PREFIX}{target.name}-{secrets.token_hex(8)}", None]
    if accelerator.is_main_process:
        try:
            # mkdir, not mkdtemp: the folder becomes the checkpoint, and keeps the mode the umask gives as it always did
            (target.parent / staging_name[0]).mkdir(parents=True)
        except OSError as exc:
            staging_name[1] = _first_line(exc)
    broadcast_object_list(staging_name)  # collective under torchrun / accelerate launch; nothing in one process
    if staging_name[1] is not None:
        where = "process 0: " if accelerator.num_processes > 1 else ""
        raise CheckpointWriteError(where + staging_name[1])
    staging = target.parent / staging_name[0]
    try:
        if accelerator.distributed_type in _SHARDED:
            # collective, so first: a process whose own write failed before it would leave the others inside it
            accelerator.save_state(str(staging / "accelerate"))  # sharded model and optimiser state
        torch.save(rng_state(), staging / f"rng-{accelerator.process_index}.pt")
        if accelerator.is_main_process:
            if accelerator.distributed_type not in _SHARDED:
                save_file(trainable_state(model), str(staging / "trainable.safetensors"))
                torch.save(optimizer.state_dict(), staging / "optimizer.pt")
            torch.save(scheduler.state_dict(), staging / "scheduler.pt")
    except Exception as exc:  # every process must hear of it first (below), or the others wait for this one for ever
        failure: Exception | None = exc
    else:
        failure = None
    _agree_on_writes(failure, staging, accelerator)  # also the barrier before the rename
    if accelerator.is_main_process:
        _flush_files(staging)
        atomic_write_json(staging / "state.json", {**state, "step": step})
        replace_dir(staging, target)  # a checkpoint of the same step saved again stays whole until replaced
        # A later step's checkpoint here is a damaged one that resume skipped (see latest_checkpoint): this run
        # writes it again when it gets there. Pruned with the rest, it would be kept in place of whole ones.
        done = [p for p in checkpoint_folders(out) if p.name <= target.name]
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return target


def _agree_on_writes(failure: Exception | None, staging: Path, accelerator) -> None:
    """Return when every process wrote its part of ``staging``; else, on every process, raise the same error.

    A collective (it gathers each process's outcome), so it is the barrier before the main process renames the
    folder. A process whose write failed used to raise alone, and the others waited at that barrier for ever
    (or until torchrun killed them, leaving the staging folder behind).
    """
    mine = None if failure is None else (write_failed(failure), _first_line(failure))
    outcomes = gather_object([mine])  # one per process, in rank order, the same list on every process
    failed = [(rank, outcome) for rank, outcome in enumerate(outcomes) if outcome is not None]
    if not failed:
        return
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)  # the other processes are done with it: they are here too
    # every process waits for the clean-up: one that raised first would exit, and torchrun would stop the main process
    # mid-way, leaving the folder behind
    accelerator.wait_for_everyone()
    if failure is not None and not write_failed(failure):
        raise failure  # not the disk: its own traceback, on the process where it happened
    writes = [(rank, text) for rank, (is_write, text) in failed if is_write]
    if not writes:
        rank, (_, text) = failed[0]
        raise RuntimeError(f"saving the checkpoint failed on process {rank} ({text}); its traceback says why")
    rank, text = writes[0]
    raise CheckpointWriteError((f"process {rank}: " if len(outcomes) > 1 else "") + text) from failure


def _flush_files(folder: Path) -> None:
    """Flush every file under ``folder`` to disk before the folder is renamed into place.

    Without it a power cut can leave the rename on disk but not the data: a checkpoint of empty files.
    """
    for file in sorted(f for f in folder.rglob("*") if f.is_file()):
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _recorded_layout(path: Path, state: dict, keys) -> dict[str, Any]:
    """The checkpoint's values of ``keys`` (None where it did not record one).

    Checkpoints written before the process count was recorded still hold one ``rng-<rank>.pt`` per process.
    """
    recorded = {key: state.get(key) for key in keys}
    if "num_processes" in recorded and recorded["num_processes"] is None:
        recorded["num_processes"] = len(list(path.glob("rng-*.pt"))) or 1
    return recorded


def _check_layout(path: Path, state: dict, layout: dict[str, int]) -> None:
    """Refuse a resume whose batch plan differs from the checkpoint's (see :func:`check_resumable`)."""
    recorded = _recorded_layout(path, state, layout)
    differs = [f"{key} {recorded[key]} -> {layout[key]}" for key in layout
               if recorded[key] is not None and recorded[key] != layout[key]]  # fmt: skip
    if not differs:
        return
    processes = recorded.get("num_processes") or layout.get("num_processes")
    how = ("in one process (the plain command, without torchrun or accelerate launch)" if processes == 1 else
           f"with {processes} processes (torchrun --nproc_per_node {processes}, or accelerate launch "
           f"--num_processes {processes})")  # fmt: skip
    raise VisalignError(
        f"{path.parent.parent}: checkpoint {path.name} was written under another batch plan ({', '.join(differs)}): "
        f"its step number would point at other examples, and its schedule was built for its total; resume it {how} "
        "as it was written, or train into a new --out directory"
    )


def check_resumable(
    path: Path,
    *,
    config_hash: str,
    data_hash: str,
    base_spec: str,
    base_fingerprint: str | None,
    layout: dict[str, int] | None = None,
    template: str | None = None,
    precision: Mapping[str, str] | None = None,
) -> dict:
    """Refuse to resume from ``path`` unless it was written for this config, this data and these base weights.

    Cheap (reads ``state.json`` only), so the trainer calls it before loading the model.

    Args:
        path: the checkpoint folder (``<out>/checkpoints/step-N``).
        config_hash: the current config's hash (``VsfaTrainConfig.config_hash``).
        data_hash: the current training set's hash.
        base_spec: the base model as the config names it (for the message).
        base_fingerprint: :func:`visalign.models.weights_fingerprint` of the base model now; None (a hub id) is not
            checked, nor is a checkpoint written before fingerprints were recorded.
        layout: what fixes each step's examples besides config and data (``num_processes``, ``examples_per_step``,
            ``total_steps``); a value the checkpoint recorded must match. A checkpoint from before the process
            count was recorded counts its ``rng-<rank>.pt`` files.
        template: the base model's chat template identity now
            (:func:`visalign.models.identity.processor_template_identity`): the labels are built with it.
        precision: ``{"dtype": ..., "device_type": ...}`` the weights load in now (``dtype: auto`` resolves per
            machine, and the config hash sees only ``auto``).

    A checkpoint written before the template and precision were recorded cannot be compared: it resumes, with a
    warning, and the checkpoints this run writes record them.

    Returns:
        The checkpoint's ``state.json``.

    Raises:
        VisalignError: the checkpoint belongs to another config, other data, other base weights, another chat
            template, another weights dtype or device type, or another batch plan (a different number of
            processes), or its ``state.json`` is damaged.
    """
    state = _read_state(path)
    run = path.parent.parent
    if state.get("config_hash") != config_hash:
        raise VisalignError(
            f"{path}: checkpoint of a different config ({state.get('config_hash')} != {config_hash}); "
            "resume with the original config or use a new --out directory"
        )
    # the steps already taken were on the old data / weights: continuing would silently mix the two
    recorded = state.get("data_hash")
    if recorded is not None and recorded != data_hash:
        raise VisalignError(
            f"{run}: the training data changed since checkpoint {path.name} was written (data hash "
            f"{recorded[:12]} != {data_hash[:12]}: the data file or one of its images differs); restore the data "
            "the run began with, or train into a new --out directory"
        )
    recorded = state.get("base_fingerprint")
    if base_fingerprint is not None and recorded is not None and recorded != base_fingerprint:
        raise VisalignError(
            f"{run}: checkpoint {path.name} was trained on base model weights {recorded}, but '{base_spec}' here "
            f"has {base_fingerprint}; LoRA weights do not carry over to other base weights. Restore the base model "
            "the run began with (the embedded default model built on another machine can differ), or train into "
            "a new --out directory"
        )
    if template is not None and state.get("template") not in (None, template):
        raise VisalignError(
            f"{run}: the chat template or tokenizer files of '{base_spec}' changed since checkpoint {path.name} was "
            f"written (template {state['template']} != {template}): the steps taken trained on labels built with "
            "the old ones. Restore the model folder's template and tokenizer files, or train into a new --out "
            "directory"
        )
    if precision is not None:
        _check_precision(path, state, precision)
    unrecorded = []
    if template is not None and state.get("template") is None:
        unrecorded.append("chat template")
    if precision is not None and all(state.get(key) is None for key in precision):
        unrecorded.append("weights dtype and device type")
    if unrecorded:  # an older checkpoint: its steps may have run otherwise, which nothing can tell now
        logger.warning("%s: checkpoint %s was written before its %s were recorded, so they cannot be compared; "
                       "resuming, and recording them from this run's checkpoints on", run, path.name,
                       " and ".join(unrecorded))  # fmt: skip
    if layout is not None:
        _check_layout(path, state, layout)
    return state


def _check_precision(path: Path, state: dict, precision: Mapping[str, str]) -> None:
    """Refuse a resume whose weights load in another dtype or on another device type than the checkpoint's.

    Steps taken in float32 and continued in bfloat16 (``dtype: auto`` on a CPU, then on a GPU) make a loss curve and
    an adapter that neither dtype alone gives. Naming the recorded dtype continues the run (the trainer takes an
    explicit dtype equal to the one ``auto`` recorded as the same run: :func:`continued_config`); a device type
    cannot be named in the config, so that resume must run on the device type the run began on.
    """
    recorded = {key: state.get(key) for key in precision}
    differs = [key for key, value in recorded.items() if value is not None and value != precision[key]]
    if not differs:
        return
    ways = []
    if "dtype" in differs:
        ways.append(f"set dtype: {recorded['dtype']} in the config (the weights then load in the dtype the run "
                    "began in)")  # fmt: skip
    if "device_type" in differs:
        hint = " (CUDA_VISIBLE_DEVICES= hides the GPUs from torch)" if recorded["device_type"] == "cpu" else ""
        ways.append(f"resume it where it trains on {recorded['device_type']}{hint}")
    raise VisalignError(
        f"{path.parent.parent}: checkpoint {path.name} was trained with the weights in {recorded.get('dtype')} on "
        f"{recorded.get('device_type')}, but this run would load them in {precision.get('dtype')} on "
        f"{precision.get('device_type')} (dtype: auto is float32 on a CPU, bfloat16 on a GPU); continuing would mix "
        f"the two in one run. To continue it, {' and '.join(ways)}; or train into a new --out directory"
    )


def continued_config(config: VsfaTrainConfig, checkpoint: Path | None) -> VsfaTrainConfig:
    """The config that names the run being resumed: ``config``, or ``config`` with ``dtype: auto``.

    ``dtype: auto`` is hashed as ``auto`` but resolves per machine, so a checkpoint records what it resolved to, and
    :func:`check_resumable` refuses a resume that resolves otherwise, advising to name the recorded dtype. Named, it
    would hash as another config: so an explicit dtype given to an ``auto`` run whose newest checkpoint records its
    dtype is taken as that run (its hash, manifest and checkpoints). Equal to the recorded dtype, it continues the
    run in the dtype it began in; any other, :func:`check_resumable` refuses, naming the recorded one.

    Args:
        config: the config this command was given.
        checkpoint: the checkpoint the run would resume from (:func:`latest_checkpoint`), or None.
    """
    if config.dtype == "auto" or checkpoint is None:
        return config
    try:
        state = json.loads((checkpoint / "state.json").read_text())
    except (OSError, ValueError):  # damaged since latest_checkpoint looked: check_resumable names it
        return config
    if not isinstance(state, dict) or state.get("dtype") is None:  # from before the dtype was recorded
        return config
    auto = config.model_copy(update={"dtype": "auto"})
    return auto if state.get("config_hash") == auto.config_hash() else config


def load_checkpoint(path: Path, *, model, optimizer, scheduler, accelerator, config_hash: str) -> dict:
    """Restore weights, optimiser, scheduler and this process's RNG from ``path``; return its ``state.json``.

    Call :func:`check_resumable` first: this checks only the config hash and the parameter names.

    Raises:
        VisalignError: the checkpoint belongs to another config, does not fit the model, lacks this process's
            RNG state, or one of its files does not decode (the message names it and the checkpoint to resume from).
    """
    state = _read_state(path)
    if state.get("config_hash") != config_hash:
        raise VisalignError(
            f"{path}: checkpoint of a different config ({state.get('config_hash')} != {config_hash}); "
            "resume with the original config or use a new --out directory"
        )
    if accelerator.distributed_type in _SHARDED:
        accelerator.load_state(str(path / "accelerate"))
    else:
        weights = _read(path / "trainable.safetensors", lambda file: load_file(str(file)))
        expected = {name for name, p in model.named_parameters() if p.requires_grad}
        if set(weights) != expected:
            raise VisalignError(f"{path}: its trainable parameters do not match the model's; use a new --out directory")
        model.load_state_dict(weights, strict=False)
        optimizer.load_state_dict(_torch_load(path / "optimizer.pt"))
    scheduler.load_state_dict(_torch_load(path / "scheduler.pt"))
    rng_file = path / f"rng-{accelerator.process_index}.pt"
    if not rng_file.is_file():  # resuming without it would draw other dropout masks than the run it continues
        raise VisalignError(
            f"{path}: no {rng_file.name} (process {accelerator.process_index}'s random state): the checkpoint is "
            "incomplete or was written by fewer processes; resume with the process count it was written with, "
            "or train into a new --out directory"
        )
    set_rng_state(_torch_load(rng_file))
    return state


def adopt_pre_split_hashes(out: Path, config: VsfaTrainConfig) -> bool:
    """Re-label a run folder written before 2026-11-23 for the resume hash that leaves logging settings out.

    Until then the config hash covered ``logging``, ``checkpoint_every`` and ``keep_checkpoints`` too. A folder of
    exactly this config (its manifest and checkpoints carry the old full hash) gets the new hash, so the same
    command resumes it after an upgrade; any other folder is left alone for the usual refusal.

    Returns:
        True when the folder was re-labelled.
    """
    run = RunDir(out)
    manifest = run.read_manifest()
    old_manifest_hash = runs_config_hash(scrub_secrets(config.model_dump(mode="json")))
    if manifest is None or manifest.get("config_hash") != old_manifest_hash:
        return False
    clean = scrub_secrets(config.hashed_settings())
    manifest.update(config=clean, config_hash=runs_config_hash(clean))
    manifest.setdefault("extra", {})["unhashed_settings"] = config.unhashed_settings()
    atomic_write_json(run.manifest_path, manifest)
    old_state_hash, new_state_hash = JobConfig.config_hash(config), config.config_hash()
    for state_file in [p / "state.json" for p in checkpoint_folders(out) if (p / "state.json").is_file()]:
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):  # damaged: resume skips this checkpoint (see latest_checkpoint)
            continue
        if isinstance(state, dict) and state.get("config_hash") == old_state_hash:
            atomic_write_json(state_file, {**state, "config_hash": new_state_hash})
    return True
