"""What an evaluation's answers depend on beyond its config text, as digests a resumed run must find unchanged.

A config names a magic image, an adapter or a benchmark file by path. Re-optimising the image into the same
folder, retraining the adapter or editing the benchmark leaves the config as it was, so a resume would keep the
old answers beside new ones and report the mixture as one system. :func:`pinned_inputs` digests the files
behind each path, the prompts of the LLM judges, the labels the refusal judge gives a fixed set of answers, and
the precision each local model runs in here;
:meth:`visalign.runs.RunDir.write_manifest` refuses a resume when one of them changed. A digest added after runs
were recorded gets a name of its own, so that such a run resumes and gains it (``system:<name>:template``,
``:dtype`` and ``:device`` came on 2026-11-24, ``refusal_judge:<name>`` and ``system:<name>:defence`` on 2026-11-24
too: a run begun before is checked against them from its next start).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from visalign.evaluation.benchmarks import Sample
from visalign.evaluation.benchmarks.mmsafetybench import SCENARIOS
from visalign.evaluation.config import SystemConfig
from visalign.evaluation.defences import resolve_defence_prompt
from visalign.evaluation.judges.agreement import load_labelled_responses
from visalign.evaluation.systems import configured_magic_image, local_precision
from visalign.models import resolve_spec, weights_fingerprint
from visalign.models.identity import processor_template_identity
from visalign.models.loading import input_rules
from visalign.runs import sha256_file

#: The sample fields an answer and its scoring depend on (paths and loader metadata may differ between machines).
_SAMPLE_FIELDS = {"id", "text", "category", "expected", "choices", "answer"}


def samples_digest(samples: Sequence[Sample], drawn: Mapping[Path, bytes] | None = None) -> str:
    """A digest of the rows a benchmark arm asks: their text, scoring fields and image bytes (not image paths).

    Args:
        samples: the rows.
        drawn: image files not written yet (attack images, written once the run is accepted): their bytes.
    """
    drawn = drawn or {}
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(sample.model_dump_json(include=_SAMPLE_FIELDS).encode())
        for image in sample.images:
            if image in drawn:
                digest.update(hashlib.sha256(drawn[image]).hexdigest().encode())
            else:
                digest.update(sha256_file(image).encode() if Path(image).is_file() else b"missing")
    return digest.hexdigest()[:16]


def unusable_digest(errors: Sequence[Mapping[str, Any]]) -> str:
    """A digest of the unusable rows an arm keeps as error records: their keys and expected behaviour.

    Pinned apart from the usable rows (``benchmark:<label>:unusable``), so that a run recorded before it was pinned
    keeps its ``benchmark:<label>`` digest and still resumes. The messages are left out: they name local paths.
    """
    digest = hashlib.sha256()
    for error in sorted(errors, key=lambda e: e["sample_id"]):
        digest.update(json.dumps([error["sample_id"], error["expected"]]).encode())
    return digest.hexdigest()[:16]


def judge_digest(judge: Any) -> str:
    """A digest of what an LLM judge sends: its messages for a fixed probe under every category it tells apart.

    Covers the prompt files, their framing and the output token cap, without knowing how a judge keeps them.
    """
    probes = [judge.messages("PROBE REQUEST", "PROBE RESPONSE", category, "PROBE REFERENCE")
              for category in (None, *SCENARIOS)]
    text = json.dumps({"messages": probes, "max_tokens": judge.output_tokens}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: The answers a refusal judge is pinned by: this packaged file, named here and never edited (a test holds its
#: sha256), since every recorded run's pin depends on it; a newer development set does not replace it.
JUDGE_PROBES = "refusal_dev_v1.jsonl"


def refusal_judge_digest(judge: Any) -> str:
    """A digest of the labels a refusal judge gives the 292 answers of :data:`JUDGE_PROBES` (0.1 s for ours).

    A run keeps the verdicts it stored, so a judge whose rules changed under the same name (a registered judge
    widened, a built-in one edited) would leave old labels beside new ones. Its behaviour on a fixed set of
    refusals and compliances stands for its rules: a change that moves none of these labels goes unseen. A judge
    must therefore label the same answer the same way every time; one that does not (an LLM sampled above
    temperature 0) would have every resume refused.
    """
    with resources.as_file(resources.files("visalign.evaluation.judges").joinpath("data", JUDGE_PROBES)) as path:
        probes = load_labelled_responses(path)
    labels = [judge.judge(row.response, row.prompt or "").label for row in probes]
    return hashlib.sha256(json.dumps(labels).encode()).hexdigest()[:16]


def _folder_digest(folder: Path) -> str:
    """A digest of an adapter folder's weight and config files."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) + sorted(folder.glob("*.json")):
        digest.update(f"{path.name}:{sha256_file(path)}".encode())
    return digest.hexdigest()[:16]


def _template_digest(spec: str) -> str | None:
    """How a local checkpoint turns conversations into tokens and decodes answers, or None for a hub id.

    The identity a Magic Image pins (:func:`visalign.models.identity.processor_template_identity`): the chat template
    rendered for a fixed conversation and the bytes of the folder's tokenizer, processor, chat template and
    generation config files, which the weights fingerprint does not cover (an edited system prompt changes every
    answer). Read from the processor alone, before any weights load.
    """
    if not Path(resolve_spec(spec)).is_dir():  # a hub id has no local files to read, as for its weights
        return None
    return processor_template_identity(input_rules(spec).processor, spec)


def _magic_digest(system: SystemConfig) -> str:
    """A digest of the magic image a system attaches: its pixels file and how it is placed."""
    magic = configured_magic_image(system)
    # The sidecar also gathers evaluation figures after optimisation; only the placement changes the answers.
    return hashlib.sha256(f"{sha256_file(magic.path)}:{magic.placement}".encode()).hexdigest()[:16]


def pinned_inputs(
    systems: Sequence[SystemConfig],
    benchmarks: Mapping[str, Sequence[Sample]],
    *,
    unusable: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    drawn: Mapping[Path, bytes] | None = None,
    llm_judges: Sequence[Any] = (),
    refusal_judge: tuple[str, Any] | None = None,
) -> dict[str, str]:
    """Digest everything the run's answers and verdicts depend on beyond its config.

    Names: ``system:<name>:<part>`` (``defence``: the defence prompt's text, for any backend; for a local model
    ``weights``, ``template``, ``adapter``, ``magic_image``, and the ``dtype``
    and ``device`` type its model is loaded with here: see :func:`precision_change`), ``benchmark:<label>`` (the
    rows asked), ``benchmark:<label>:unusable`` (the rows kept as error records) and ``llm_judge:<judge id>`` (its
    prompt). A judge's id names its prompt version: a new version pins a new name, and the runner judges again the
    verdicts of the old one, so a run survives a judge upgrade; a prompt changed under the same version is refused.
    ``refusal_judge:<name>`` pins the refusal judge's labels on fixed answers (:func:`refusal_judge_digest`).

    Args:
        systems: the systems with their paths already resolved. An API system's model is not local: nothing of
            it is pinned.
        benchmarks: each benchmark arm's label and the samples it asks (after attacks and ``limit``).
        unusable: each arm's error records of unusable rows (after ``limit``).
        drawn: attack images not written yet, by path: their bytes.
        llm_judges: the run's LLM judges.
        refusal_judge: the run's refusal judge, as its configured name and the judge.
    """
    pinned: dict[str, str] = {}
    for system in systems:
        if system.defence_prompt is not None:  # a preset's text can change under its name (one from a plugin)
            text = resolve_defence_prompt(system.defence_prompt) or ""
            pinned[f"system:{system.name}:defence"] = hashlib.sha256(text.encode()).hexdigest()[:16]
        if system.backend != "local":
            continue
        weights = weights_fingerprint(system.model)
        if weights is not None:  # a hub id has no local files to read
            pinned[f"system:{system.name}:weights"] = weights
        template = _template_digest(system.model)
        if template is not None:
            pinned[f"system:{system.name}:template"] = template
        # in bfloat16 an answer depends on its batch, and CPU and CUDA kernels round differently: a run begun on
        # a CPU (float32 by default) and resumed on a GPU (bfloat16) would mix two systems' answers under one name
        pinned[f"system:{system.name}:dtype"], pinned[f"system:{system.name}:device"] = local_precision(system)
        if system.adapter is not None and system.adapter.is_dir():
            pinned[f"system:{system.name}:adapter"] = _folder_digest(system.adapter)
        if system.magic_image is not None:
            pinned[f"system:{system.name}:magic_image"] = _magic_digest(system)
    for label, samples in benchmarks.items():
        pinned[f"benchmark:{label}"] = samples_digest(samples, drawn)
    for label, errors in (unusable or {}).items():
        pinned[f"benchmark:{label}:unusable"] = unusable_digest(errors)
    for judge in llm_judges:
        pinned[f"llm_judge:{judge.id}"] = judge_digest(judge)
    if refusal_judge is not None:
        name, judge = refusal_judge
        pinned[f"refusal_judge:{name}"] = refusal_judge_digest(judge)
    return pinned


def precision_change(systems: Sequence[SystemConfig], recorded: Mapping[str, str],
                     pinned: Mapping[str, str]) -> str | None:  # fmt: skip
    """Why a resumed run would answer in another dtype or on another kind of device than it began, or None.

    :meth:`visalign.runs.RunDir.write_manifest` would refuse it too, naming the pins; this says what to do: name
    the dtype the run began with (``dtype`` is not hashed with the config, so that resumes it) and resume it on
    the device type it began on. A run recorded before these were pinned has none to compare, and gains them.

    Args:
        systems: the run's systems.
        recorded: the pins in the run's manifest.
        pinned: the pins of this start (:func:`pinned_inputs`).
    """
    for system in systems:
        dtype_key, device_key = f"system:{system.name}:dtype", f"system:{system.name}:device"
        if dtype_key not in pinned:  # an API system
            continue
        dtype, device = pinned[dtype_key], pinned[device_key]
        old_dtype, old_device = recorded.get(dtype_key, dtype), recorded.get(device_key, device)
        if (dtype, device) == (old_dtype, old_device):
            continue
        differ = " and ".join(kind for kind, old, new in (("dtypes", old_dtype, dtype), ("devices", old_device, device))
                              if old != new)  # fmt: skip
        began = (f"system {system.name!r} began in {old_dtype} on {old_device}, and here it would run in {dtype} "
                 f"on {device} (answers differ between {differ})")  # fmt: skip
        named = f"dtype: {old_dtype} in system {system.name!r}"
        if device == old_device:
            return f"{began}; set {named} to resume it"
        where = f"a {old_device} machine" + (f" with {named}" if dtype != old_dtype else "")
        return f"{began}; resume it on {where}, or evaluate into a new --out directory"
    return None
