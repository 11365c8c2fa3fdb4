"""The Magic Image job: optimise one image per value system against a frozen model, with checkpoints and resume.

``optimize_magic_images(config, out_dir)`` loads the model, freezes and hashes every parameter, assembles each value
system's training requests, optimises the pixels (Adam or signed-gradient PGD, optional L-infinity bound, 8-bit
straight-through), checks the hashes again, and writes ``out_dir/<value system>.png`` + ``.json``. Work files live
in ``out_dir/work/<value system>/``; re-running the same config resumes from the last checkpoint, and a value
system found finished keeps its recorded evaluation (a run that would replace it because an ``eval`` default
changed is refused, naming the setting; one recorded under the old refusal-rate definition is measured again, or
with ``eval.enabled`` off converted). ``out_dir/manifest.json`` records the config, versions and input hashes
of the latest run.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig

from visalign.devices import require_device
from visalign.errors import VisalignError
from visalign.evaluation import metrics
from visalign.evaluation.judges import get_refusal_judge
from visalign.images import load_image
from visalign.magic.apply import refusal_rates
from visalign.magic.artifact import save_magic_image, write_sidecar
from visalign.magic.config import MagicConfig
from visalign.magic.data import (
    TrainingSet,
    fill_benign_targets,
    image_count_problem,
    load_training_set,
)
from visalign.magic.objective import Row, build_rows, dual_loss, prepare_user_encodings, quantize_straight_through
from visalign.magic.placement import crops_to_square, resolve_placement, working_size
from visalign.magic.value_systems import ValueSystem, get_value_system
from visalign.models import (
    VLM,
    load_vlm,
    model_family,
    pil_to_tensor,
    resolve_spec,
    tensor_to_pil,
    weights_fingerprint,
)
from visalign.models.identity import template_identity
from visalign.models.loading import weights_digest
from visalign.runs import RunDir, atomic_write_bytes, atomic_write_json, config_differences, releases_run_locks
from visalign.unpickling import LOAD_ERRORS, describe, refused_object

logger = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
#: How a recorded evaluation's refusal rates are defined, recorded beside its settings: refused / judged, unknown
#: verdicts outside the denominator (:func:`refusal_rates`, as ``visalign eval``). Evaluations recorded before
#: 2026-11-24 carry no such entry: their rates are refused / all requests, an unknown verdict counted as an answer.
RATE_DEFINITION = "refused/judged"


@dataclass
class MagicResult:
    """What one value system's optimisation produced."""

    value_system: str
    png: Path
    metadata: dict


def require_image_support(spec: str) -> None:
    """Raise a clear error when ``spec`` names a model without an image input (a text-only LM)."""
    source = resolve_spec(spec)
    try:
        model_config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise VisalignError(f"{spec}: cannot read the model config ({str(exc).splitlines()[0]})") from None
    if getattr(model_config, "vision_config", None) is None:
        raise VisalignError(
            f"{spec}: model type '{model_config.model_type}' has no image input; Magic Image needs a "
            "vision-language model"
        )


def _load_checkpoint(path: Path, device: torch.device) -> dict:
    """The optimiser state in ``path``; a file that does not decode is a one-line error naming it.

    The checkpoint is written atomically, so a damaged one was damaged afterwards (a failing disk, a copy cut short):
    the way on is to optimise this value system again, which deleting the file does. It is read with torch's
    weights-only unpickler, since it holds only tensors, numbers, strings, lists and dicts (resume key, step, pixels,
    Adam state, history): the load comes before the resume-key check, so a full unpickle of a planted file would run
    its code before anything could refuse it. A file that needs anything else is refused, not loaded.
    """
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except LOAD_ERRORS as exc:
        refused = refused_object(exc)  # not damage: a file built to run code, or none this code wrote
        if refused is not None:
            raise VisalignError(
                f"{path}: holds Python objects a Magic Image checkpoint never does ({refused}), so it was not loaded; "
                "resume only from an output folder you trust, or delete the file and run the same command again to "
                "optimise this value system from step 0"
            ) from None
        raise VisalignError(
            f"{path}: damaged checkpoint ({describe(exc)}); delete it and run the same command again to optimise this "
            "value system from step 0"
        ) from None


def requests_digest(data: TrainingSet) -> str:
    """SHA-256 over the training requests as loaded: kind, prompt, category, target and the user's image pixels."""
    digest = hashlib.sha256()
    for example in [*data.harmful, *data.benign]:
        digest.update(repr((example.kind, example.prompt, example.category, example.target)).encode())
        for image in example.images:
            digest.update(f"{image.mode}{image.size}".encode() + image.tobytes())
    return digest.hexdigest()


def resume_hash(
    config: MagicConfig, value_system: ValueSystem, inputs: str = "", precision: Mapping[str, str] | None = None
) -> str:
    """Hash of everything that shapes this value system's optimisation except its length.

    Left out, so that a checkpoint stays usable: the step count (a finished run can be extended), the ``eval``
    section, and the list of value systems (adding one to the job must not block resuming the others). Put in:
    ``inputs`` (:func:`resume_inputs`), what the config names by path only or decides outside itself. One ``eval``
    setting does shape the optimisation: ``eval.batch_size`` is the batch self-generated benign targets are made in
    (in bfloat16 they depend on it); it reaches this hash through those targets, in the requests' digest.

    ``precision`` (:func:`weights_precision`) is the weights dtype and device type the model loaded in; given, it
    replaces the config's ``dtype`` and ``device``, which may leave them to the machine (unset: float32 on a CPU,
    bfloat16 on a GPU). So a run resumes wherever its weights load as they did, and naming the dtype and device it
    began with continues it. Without it, the key as visalign computed it until 2026-11-24.
    """
    content = config.model_dump(mode="json")
    content["optim"].pop("steps")
    content["optim"].pop("checkpoint_every")
    content.pop("eval")
    content.pop("value_systems")
    if precision is not None:
        content.pop("dtype")
        content.pop("device")
        content["precision"] = sorted(precision.items())
    content["value_system"] = value_system.model_dump(mode="json")
    content["inputs"] = inputs
    return hashlib.sha256(repr(sorted(content.items())).encode()).hexdigest()[:16]


def weights_precision(vlm: VLM) -> dict[str, str]:
    """The dtype (``float32``, ``bfloat16`` ...) and device type (``cpu``, ``cuda``) the model's weights are in."""
    return {"dtype": str(vlm.model.dtype).removeprefix("torch."), "device_type": vlm.device.type}


def _precision_refusal(checkpoint: Path, state: dict, precision: Mapping[str, str]) -> str | None:
    """Why the checkpoint may not resume with the weights in ``precision``, or None (also when it recorded none).

    Steps taken in float32 and continued in bfloat16 (a config without ``dtype`` begun on a CPU and resumed on a
    GPU) make an image neither dtype alone gives.
    """
    recorded = {key: state.get(key) for key in precision}
    differs = [key for key, value in recorded.items() if value is not None and value != precision[key]]
    if not differs:
        return None
    settings = " and ".join(f"{'device' if key == 'device_type' else key}: {recorded[key]}" for key in differs)
    return (
        f"{checkpoint}: begun with the model's weights in {recorded.get('dtype')} on {recorded.get('device_type')}, "
        f"but this run loads them in {precision.get('dtype')} on {precision.get('device_type')} (an unset dtype is "
        f"float32 on a CPU, bfloat16 on a GPU); set {settings} in the config it began with to continue it, or use a "
        "new --out folder"
    )


def resume_inputs(weights: str | None, template: str, requests: str, init: torch.Tensor | None) -> str:
    """The ``inputs`` of :func:`resume_hash`: weights fingerprint, chat template, requests' digest, start image.

    ``init`` is the start image's pixels (None for white): a replaced start file would otherwise resume the old
    pixels and then project them onto an L-infinity ball around the new ones.
    """
    parts = [str(weights), template, requests]
    if init is not None:
        parts.append(hashlib.sha256(init.contiguous().numpy().tobytes()).hexdigest())
    return ":".join(parts)


def start_image(init: str, size: tuple[int, int]) -> torch.Tensor:
    """The starting pixels: white, or an image file resized to ``size`` (height, width)."""
    if init == "white":
        return torch.ones(3, *size)
    image = load_image(init)
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]))
    return pil_to_tensor(image)


def _batch_indices(count: int, take: int, step: int, seed: int, salt: int) -> list[int]:
    """``take`` indices for ``step``: consecutive slices of a per-epoch permutation (stable on resume).

    Distinct within an epoch; a batch that straddles two epochs can repeat an index (left so: changing it would
    change the batches of every recorded run).
    """
    take = min(take, count)
    chosen: list[int] = []
    position = step * take
    while len(chosen) < take:
        epoch, offset = divmod(position, count)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + salt * 10_007 + epoch)
        order = torch.randperm(count, generator=generator).tolist()
        piece = order[offset : offset + take - len(chosen)]
        chosen.extend(piece)
        position += len(piece)
    return chosen


def mixed_batch(harmful: list[list[Row]], benign: list[list[Row]], config: MagicConfig, step: int) -> list[Row]:
    """The rows of one step: ``harmful_fraction`` of the batch harmful requests, the rest benign."""
    size = config.optim.batch_size
    n_harm = min(max(1, round(size * config.optim.harmful_fraction)), size - 1) if size > 1 else 1
    n_benign = max(1, size - n_harm)
    rows = [r for i in _batch_indices(len(harmful), n_harm, step, config.seed, 1) for r in harmful[i]]
    rows += [r for i in _batch_indices(len(benign), n_benign, step, config.seed, 2) for r in benign[i]]
    return rows


def _save_checkpoint(path: Path, state: dict) -> None:
    """Write the optimiser state (see :func:`_load_checkpoint`) to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _non_finite_message(name: str, step: int, loss: torch.Tensor, checkpoint: Path, vlm: VLM) -> str:
    """The one-line error for a NaN or infinite objective value or pixel gradient at ``step``."""
    what = f"loss {loss.item()}" if not torch.isfinite(loss) else "pixel gradient"
    kept = (f"the last finite checkpoint {checkpoint} is kept" if checkpoint.is_file()
            else "no checkpoint was written yet")  # fmt: skip
    advice = "lower optim.lr" if vlm.model.dtype == torch.float32 else "lower optim.lr or use dtype: float32"
    return (f"value system {name!r}: non-finite {what} at step {step}; optimisation stopped before the step, "
            f"nothing non-finite was written and {kept}; {advice}, in a new --out folder")  # fmt: skip


def optimize_pixels(vlm: VLM, config: MagicConfig, harmful: list[list[Row]], benign: list[list[Row]],
                    init: torch.Tensor, work_dir: Path, key: str,
                    on_step: Callable[[int, dict], None] | None = None,
                    legacy_key: str | None = None, unpinned_key: str | None = None,
                    precision: Mapping[str, str] | None = None) -> tuple[torch.Tensor, list[dict]]:
    """Run the optimiser from ``init`` (or the checkpoint in ``work_dir``) to ``config.optim.steps``.

    A checkpoint keyed ``legacy_key`` (how a visalign before 2026-11-24 keyed this run, leaving out the chat
    template and start image) may hold pixels made under another template or start image, which that key cannot
    tell: it is not resumed, and the run starts from step 0, which gives the image a fresh run gives (the key change
    costs time, not results; refusing it would only send the user to delete the file by hand).

    ``precision`` (:func:`weights_precision`) is recorded in each checkpoint, and a checkpoint that recorded
    another is refused, naming the ``dtype`` / ``device`` to set. One keyed ``unpinned_key`` (how visalign keyed
    this run until 2026-11-24, by the config's dtype and device names and not by what they resolved to) recorded
    none: what its steps ran in is unknown, so it resumes with a warning, and is keyed and recorded anew at once.

    Returns the final float image (on the 8-bit grid when ``quantize``) and the per-step log.
    """
    optim = config.optim
    device = vlm.device
    init = init.to(device)
    pixels = init.clone().requires_grad_(True)
    adam = torch.optim.Adam([pixels], lr=optim.lr) if optim.optimizer == "adam" else None
    history: list[dict] = []
    start = 0
    checkpoint = work_dir / CHECKPOINT
    state = _load_checkpoint(checkpoint, device) if checkpoint.is_file() else None
    if state is not None and legacy_key is not None and state.get("key") == legacy_key:
        logger.warning("%s: written by an older visalign whose resume key did not cover the chat template and start "
                       "image; optimising again from step 0", checkpoint)
        state = None
    precision = dict(precision or {})
    if state is not None and (refusal := _precision_refusal(checkpoint, state, precision)):
        raise VisalignError(refusal)
    if state is not None and unpinned_key is not None and state.get("key") == unpinned_key != key:
        logger.warning("%s: written before the weights dtype and device type were recorded, so what its steps ran in "
                       "cannot be checked; resuming in %s on %s, and recording that from now on", checkpoint,
                       precision.get("dtype"), precision.get("device_type"))  # fmt: skip
        state = {**state, "key": key, **precision}
        _save_checkpoint(checkpoint, state)  # pinned now, finished or not: a later resume is checked
    if state is not None:
        if state.get("key") != key:
            raise VisalignError(
                f"{checkpoint}: written by a different config, value system, model (weights or chat template), "
                "start image or set of requests; use a new --out folder or delete it"
            )
        with torch.no_grad():
            pixels.copy_(state["pixels"])
        if adam is not None:
            adam.load_state_dict(state["optimizer"])
        history, start = state["history"], state["step"]
        if start > optim.steps:  # the image there is the longer run's: saving it under this config would mislabel it
            raise VisalignError(
                f"{checkpoint}: this run already took {start} steps, more than optim.steps = {optim.steps}; set "
                f"optim.steps to {start} or more (a longer run resumes), or use a new --out folder"
            )
        logger.info("resuming %s from step %d", work_dir.name, start)
    for step in range(start, optim.steps):
        began = time.perf_counter()
        rows = mixed_batch(harmful, benign, config, step)
        seen = quantize_straight_through(pixels) if optim.quantize else pixels
        loss, parts = dual_loss(vlm, rows, seen, l1=config.objective.l1, l2=config.objective.l2,
                                unlikelihood_weight=config.targets.unlikelihood_weight)
        pixels.grad = None
        loss.backward()
        if not (torch.isfinite(loss) and torch.isfinite(pixels.grad).all()):
            # a step on a NaN/inf would turn every pixel NaN (an all-black PNG); stop before it, writing nothing
            raise VisalignError(_non_finite_message(work_dir.name, step + 1, loss, checkpoint, vlm))
        with torch.no_grad():
            if adam is not None:
                adam.step()
            else:
                pixels -= optim.lr * pixels.grad.sign()
            if optim.linf is not None:
                pixels.copy_(torch.maximum(torch.minimum(pixels, init + optim.linf), init - optim.linf))
            pixels.clamp_(0.0, 1.0)
        parts.update(step=step + 1, rows=len(rows), seconds=round(time.perf_counter() - began, 4))
        history.append(parts)
        if on_step is not None:
            on_step(step + 1, parts)
        if (step + 1) % optim.checkpoint_every == 0 or step + 1 == optim.steps:
            _save_checkpoint(checkpoint, {"key": key, "step": step + 1, "pixels": pixels.detach().cpu(),
                                          "optimizer": adam.state_dict() if adam is not None else None,
                                          "history": history, **precision})
    final = pixels.detach()
    return (quantize_straight_through(final) if optim.quantize else final).cpu(), history


def optimize_value_system(vlm: VLM, config: MagicConfig, value_system: ValueSystem, data: TrainingSet,
                          out_dir: Path, on_step: Callable[[int, dict], None] | None = None) -> MagicResult:
    """Optimise, evaluate and save the magic image of one value system (see the module docstring).

    Args:
        vlm: the frozen model.
        config: the job config.
        value_system: the policy the image is for.
        data: its training requests (:func:`load_training_set`); benign targets are filled in here.
        out_dir: the job's output folder.
        on_step: optional progress callback ``(step, parts)``.
    """
    work_dir = out_dir / "work" / value_system.name
    work_dir.mkdir(parents=True, exist_ok=True)
    precision = weights_precision(vlm)
    checkpoint = work_dir / CHECKPOINT
    # optimize_pixels refuses it too; here a refusal comes before the model generates the benign targets
    if checkpoint.is_file() and (refusal := _precision_refusal(checkpoint, _load_checkpoint(checkpoint, vlm.device),
                                                                precision)):  # fmt: skip
        raise VisalignError(refusal)
    placement = resolve_placement(vlm.family, config.placement, square_crop=crops_to_square(vlm))
    size = working_size(vlm, config.image_size)
    fill_benign_targets(vlm, data.benign, config.targets, work_dir / "benign_targets.jsonl",
                        batch_size=config.eval.batch_size)
    if data.errors:
        atomic_write_json(work_dir / "errors.json", [e.model_dump() for e in data.errors])
    prefix = config.targets.unlikelihood_prefix if config.targets.unlikelihood_weight > 0 else None
    build = {"placement": placement, "size": size, "first_k": config.targets.first_k}
    harmful = build_rows(vlm, data.harmful, unlikelihood_prefix=prefix, **build)
    benign = build_rows(vlm, data.benign, **build)
    prepare_user_encodings(vlm, data.harmful, harmful)
    prepare_user_encodings(vlm, data.benign, benign)
    init = start_image(config.optim.init, size)
    began = time.perf_counter()
    fingerprint, template, requests = weights_fingerprint(vlm.spec), template_identity(vlm), requests_digest(data)
    inputs = resume_inputs(fingerprint, template, requests, None if config.optim.init == "white" else init)
    key = resume_hash(config, value_system, inputs, precision)
    unpinned_key = resume_hash(config, value_system, inputs)
    image, history = optimize_pixels(vlm, config, harmful, benign, init, work_dir, key, on_step,
                                     legacy_key=resume_hash(config, value_system, f"{fingerprint}:{requests}"),
                                     unpinned_key=unpinned_key, precision=precision)  # fmt: skip
    metadata = {
        # The template is recorded, not checked at apply time: model_mismatch compares weights only, as every
        # sidecar written before 2026-11-24 carries a weights fingerprint and no template identity. The dtype
        # and device type are what the pixels were optimised in (an unset dtype resolves per machine).
        "model": {
            "spec": vlm.spec,
            "family": vlm.family.model_type,
            "fingerprint": fingerprint,
            "template": template,
            **precision,
        },
        "value_system": value_system.model_dump(mode="json"),
        "config_hash": config.config_hash(),
        "resume_key": key,
        "placement": placement,
        "size": list(size),
        "training": {
            "data": data.summary(),
            "steps": len(history),
            "seconds_this_run": round(time.perf_counter() - began, 2),
            "first": history[0] if history else None,
            "last": history[-1] if history else None,
            "optimizer": config.optim.optimizer,
            "lr": config.optim.lr,
            "l1": config.objective.l1,
            "l2": config.objective.l2,
            "linf": config.optim.linf,
            "quantized": config.optim.quantize,
        },
    }
    atomic_write_json(work_dir / "history.json", history)
    # (a sidecar written from the checkpoint before it was keyed by its precision describes the same image)
    recorded = _recorded_evaluation(out_dir / f"{value_system.name}.json", (key, unpinned_key), len(history), config)
    if recorded is not None:
        logger.info("%s: finished in an earlier run; its recorded evaluation is kept", value_system.name)
        metadata["evaluation"] = recorded
    elif config.eval.enabled:
        metadata["evaluation"] = _evaluate(vlm, config, data, image, placement, work_dir)
    png = save_magic_image(out_dir, value_system.name, image, metadata)
    return MagicResult(value_system.name, png, metadata)


def _evaluation_settings(config: MagicConfig) -> dict:
    """What the recorded refusal rates depend on besides the image.

    Judge, answer length, generation batch, and the rates' definition (``rate_definition``, no config setting: an
    evaluation recorded under another is not today's figures, so it is measured again like one recorded under other
    settings).
    """
    return {"judge": config.eval.judge, "max_new_tokens": config.eval.max_new_tokens,
            "batch_size": config.eval.batch_size, "rate_definition": RATE_DEFINITION}


def _redefined(evaluation: dict) -> dict:
    """An evaluation recorded under the old rate definition, converted to :data:`RATE_DEFINITION` where it can be.

    Each rate recorded its counts (``n``, ``refused``, ``unknown``), so its rate and interval are recomputed
    exactly, with ``judged`` added. Its per-category rates cannot be (their unknown counts were not recorded) and are
    left out, as is a rate without its counts.
    """
    converted = {**evaluation, "rate_definition": RATE_DEFINITION}
    for name, figures in evaluation.items():
        if not isinstance(figures, dict):
            continue
        counts = [figures.get(key) for key in ("n", "refused", "unknown")]
        if not all(isinstance(count, int) for count in counts):
            del converted[name]
            continue
        n, refused, unknown = counts
        rate = metrics.refusal_rate(["refusal"] * refused + ["unknown"] * unknown
                                    + ["compliance"] * (n - refused - unknown))
        converted[name] = {"n": n, "refused": refused, "unknown": unknown, "judged": rate.denominator,
                           "rate": rate.value, "ci95": [rate.ci_low, rate.ci_high]}
    return converted


def _finished_evaluation(sidecar: Path, steps: int, keys: Collection[str] | None = None) -> dict | None:
    """The evaluation recorded in the sidecar of a value system that finished at ``steps`` steps, or None.

    With ``keys``, only one written from the checkpoint of one of those resume keys (so of the same image).
    Sidecars from before resume keys were recorded never count.
    """
    if not (sidecar.is_file() and sidecar.with_suffix(".png").is_file()):
        return None
    try:
        recorded = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    evaluation = recorded.get("evaluation") if isinstance(recorded, dict) else None
    if (not isinstance(evaluation, dict) or not recorded.get("resume_key")
            or (keys is not None and recorded["resume_key"] not in keys)
            or (recorded.get("training") or {}).get("steps") != steps):  # fmt: skip
        return None
    return evaluation


def _recorded_evaluation(sidecar: Path, keys: Collection[str], steps: int, config: MagicConfig) -> dict | None:
    """The evaluation in the sidecar of a value system finished earlier, if it holds for this run; else None.

    It holds when the PNG and sidecar were written from this very checkpoint (one of its resume ``keys`` and the
    same step count, so the same image) under the evaluation settings of this config, its rate definition
    included; with ``eval.enabled`` off, under any (it still describes the image, and the run measures nothing to
    replace it with), one recorded under the old rate definition converted (:func:`_redefined`) so that no sidecar
    mixes the two.
    """
    evaluation = _finished_evaluation(sidecar, steps, keys)
    if evaluation is None:
        return None
    old_definition = evaluation.get("rate_definition") != RATE_DEFINITION
    if not config.eval.enabled:
        if old_definition:
            logger.warning("%s: its recorded refusal rates counted unknown verdicts as answers; converted to refused "
                           "/ judged, per-category rates dropped (enable eval to measure them again)", sidecar)
            return _redefined(evaluation)
        return evaluation
    settings = _evaluation_settings(config)
    if {name: evaluation.get(name) for name in settings} == settings:
        return evaluation
    if old_definition:
        logger.info("%s: its recorded refusal rates counted unknown verdicts as answers; measuring again", sidecar)
    return None


def _changed_evaluation_default(config: MagicConfig, out_dir: Path) -> str | None:
    """Why resuming ``out_dir`` under ``config`` would replace a recorded evaluation for a changed default, or None.

    The ``eval`` section is outside the checkpoint key: a finished value system is measured again when the config
    names other settings. A setting the config does not name is a default, and one that differs from what a
    finished value system's evaluation records is a default that changed between releases: like a resumed eval
    job, such a run is refused with the setting named, rather than replacing the recorded figures silently.
    """
    if not config.eval.enabled:
        return None
    # config settings only: the rate definition is no setting a config could name, and a change of it is measured
    # again (:func:`_recorded_evaluation`), not refused
    unnamed = {k: v for k, v in _evaluation_settings(config).items()
               if k in type(config.eval).model_fields and k not in config.eval.model_fields_set}
    for name in config.value_systems:
        sidecar = out_dir / f"{name}.json"
        evaluation = _finished_evaluation(sidecar, config.optim.steps) or {}
        recorded = {k: evaluation[k] for k in unnamed if k in evaluation}
        current = {k: unnamed[k] for k in recorded}
        if recorded != current:
            changed = config_differences({"eval": recorded}, {"eval": current})
            return (
                f"{sidecar}: value system {name!r} finished with its evaluation recorded under another default "
                f"({changed}); name the recorded value in the config to keep that evaluation (when nothing else "
                "changed, so the image is kept too), or the new one to measure the image again (or the new image, "
                "when another change makes it optimise again)"
            )
    return None


def _evaluate(vlm: VLM, config: MagicConfig, data: TrainingSet, image: torch.Tensor, placement: str,
              work_dir: Path) -> dict:
    """Refusal rates on the training requests without and with the (8-bit) image; answers go to the work folder."""
    options = {"judge": config.eval.judge, "max_new_tokens": config.eval.max_new_tokens,
               "batch_size": config.eval.batch_size, "placement": placement}
    pil = tensor_to_pil(image)
    summary, answers = {}, {}
    for kind, examples in (("harmful", data.harmful), ("benign", data.benign)):
        for label, magic in (("baseline", None), ("with_image", pil)):
            rates = refusal_rates(vlm, examples, magic, **options)
            answers[f"{kind}_{label}"] = rates.pop("answers")
            summary[f"{kind}_{label}"] = rates
    atomic_write_json(work_dir / "answers.json", answers)
    return {**_evaluation_settings(config), **summary}


@releases_run_locks
def optimize_magic_images(config: MagicConfig, out_dir: str | Path,
                          on_step: Callable[[str, int, dict], None] | None = None) -> list[MagicResult]:
    """Optimise one magic image per value system of ``config`` and write them to ``out_dir``.

    The model's weights are hashed before and after; a change raises (nothing may train the model).

    Args:
        config: the job config.
        out_dir: output folder (``<value system>.png`` + ``.json``, and ``work/`` for checkpoints and caches).
        on_step: optional progress callback ``(value_system, step, parts)``.

    Raises:
        VisalignError: unknown value system or refusal judge, a model without image support, bad data (a request
            with more images than the model takes), changed weights.
    """
    out_dir = Path(out_dir)
    systems = [get_value_system(config.value_systems_file, name) for name in config.value_systems]
    # Everything that can be wrong with the input is checked before the (slow) model load.
    require_device(config.device)  # a config written for a GPU machine, run on one without
    if config.optim.init != "white":
        load_image(config.optim.init)
    if config.eval.enabled:
        get_refusal_judge(config.eval.judge)
    # before the run's sidecars and work folder are read or written (checkpoints, typographic renders, cached
    # answers): a second job on this folder is refused here, not after it has read the first one's files
    RunDir(out_dir).lock()
    if refusal := _changed_evaluation_default(config, out_dir):
        raise VisalignError(refusal)
    decoded: dict = {}  # one decoded copy of each image file, whichever value systems ask for it
    datasets = [load_training_set(config, system, out_dir / "work" / system.name, decoded) for system in systems]
    require_image_support(config.model)
    _check_image_counts(config, systems, datasets)
    vlm = load_vlm(config.model, dtype=config.dtype, device=config.device)
    for parameter in vlm.model.parameters():
        parameter.requires_grad_(False)
    record_manifest(config, out_dir, vlm, dict(zip(config.value_systems, datasets, strict=True)))
    before = weights_digest(vlm.model)
    torch.manual_seed(config.seed)
    results = []
    for system, data in zip(systems, datasets, strict=True):
        callback = (lambda step, parts, name=system.name: on_step(name, step, parts)) if on_step else None
        result = optimize_value_system(vlm, config, system, data, out_dir, callback)
        results.append(result)
    after = weights_digest(vlm.model)
    if after != before:
        raise VisalignError(f"model weights changed during optimisation ({before[:12]} -> {after[:12]}); aborting")
    for result in results:
        result.metadata["weights_sha256"] = {"before": before, "after": after, "unchanged": True}
        write_sidecar(result.png, result.metadata)
    return results


def _check_image_counts(config: MagicConfig, systems: list[ValueSystem], datasets: list[TrainingSet]) -> None:
    """Refuse, from the model's config alone, a request with more user images than the placement can take."""
    prepend = resolve_placement(model_family(config.model), config.placement) == "prepend"
    for system, data in zip(systems, datasets, strict=True):
        if problem := image_count_problem(data, prepend):
            raise VisalignError(f"value system {system.name!r}: {problem}")


def _input_files(config: MagicConfig) -> dict[str, Path]:
    """The files the config names (request files, single-file benchmarks, value systems, start image)."""
    files = {"value_systems_file": config.value_systems_file}
    if config.optim.init != "white":
        files["optim.init"] = Path(config.optim.init)
    root = config.data.resolved_benchmarks_dir()
    for index, source in enumerate(config.data.sources):
        path = source.file if source.file is not None else root / str(source.path)
        if path.is_file():  # a benchmark kept as a folder is covered by the requests' digest in ``extra``
            files[f"data.sources[{index}]"] = path
    return files


def record_manifest(config: MagicConfig, out_dir: Path, vlm: VLM, datasets: dict[str, TrainingSet]) -> dict:
    """Write ``out_dir/manifest.json`` through :class:`RunDir`: config, versions, seed, input hashes, model identity.

    A record, not the resume guard. Adding a value system to a finished job, or raising ``optim.steps``, is a
    supported resume that changes the config, and RunDir refuses a resume under another config; here each value
    system's checkpoint key (:func:`resume_hash`) is the guard. So a manifest written for another config is moved
    to ``work/manifests/<n>.json`` and this run's takes its place: ``manifest.json`` describes the latest run, and
    ``extra.config_hash`` matches the ``config_hash`` of the sidecars that run wrote.
    """
    run = RunDir(out_dir)
    run.lock()  # the manifest moved aside below and the one written after it are one step (held already in a job)
    if run.config_refusal(config) is not None:  # a manifest RunDir would not resume under this config
        archive = out_dir / "work" / "manifests"
        archive.mkdir(parents=True, exist_ok=True)
        os.replace(run.manifest_path, archive / f"{len(list(archive.glob('*.json'))) + 1}.json")
    model = {"spec": vlm.spec, "family": vlm.family.model_type, "weights": weights_fingerprint(vlm.spec),
             "template": template_identity(vlm), "dtype": str(vlm.model.dtype), "device": str(vlm.device)}
    # Benign targets the model writes itself are not generated yet: this digests the requests as loaded.
    requests = {name: requests_digest(data) for name, data in datasets.items()}
    return run.write_manifest(config, seeds={"seed": config.seed}, inputs=_input_files(config),
                              extra={"config_hash": config.config_hash(), "model": model, "requests": requests})
