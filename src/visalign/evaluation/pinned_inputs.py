"""What an evaluation's answers depend on beyond its config text, as digests a resumed run must find unchanged.

A config names a magic image, an adapter or a benchmark file by path. Re-optimising the image into the same
folder, retraining the adapter or editing the benchmark leaves the config as it was, so a resume would keep the
old answers beside new ones and report the mixture as one system. :func:`pinned_inputs` digests the files
behind each path; :meth:`visalign.runs.RunDir.write_manifest` refuses a resume when one of them changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from visalign.evaluation.benchmarks import Sample
from visalign.evaluation.config import SystemConfig
from visalign.evaluation.systems import configured_magic_image
from visalign.models import weights_fingerprint
from visalign.runs import sha256_file

#: The sample fields an answer and its scoring depend on (paths and loader metadata may differ between machines).
_SAMPLE_FIELDS = {"id", "text", "category", "expected", "choices", "answer"}


def samples_digest(samples: Sequence[Sample]) -> str:
    """A digest of the rows a benchmark arm asks: their text, scoring fields and image bytes (not image paths)."""
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(sample.model_dump_json(include=_SAMPLE_FIELDS).encode())
        for image in sample.images:
            digest.update(sha256_file(image).encode() if Path(image).is_file() else b"missing")
    return digest.hexdigest()[:16]


def _folder_digest(folder: Path) -> str:
    """A digest of an adapter folder's weight and config files."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) + sorted(folder.glob("*.json")):
        digest.update(f"{path.name}:{sha256_file(path)}".encode())
    return digest.hexdigest()[:16]


def _magic_digest(system: SystemConfig) -> str:
    """A digest of the magic image a system attaches: its pixels file and how it is placed."""
    magic = configured_magic_image(system)
    # The sidecar also gathers evaluation figures after optimisation; only the placement changes the answers.
    return hashlib.sha256(f"{sha256_file(magic.path)}:{magic.placement}".encode()).hexdigest()[:16]


def pinned_inputs(systems: Sequence[SystemConfig], benchmarks: Mapping[str, Sequence[Sample]]) -> dict[str, str]:
    """Digest every local file the run's answers depend on, named ``system:<name>:<part>`` / ``benchmark:<label>``.

    Args:
        systems: the systems with their paths already resolved. An API system's model is not local: nothing of
            it is pinned.
        benchmarks: each benchmark arm's label and the samples it asks (after attacks and ``limit``).
    """
    pinned: dict[str, str] = {}
    for system in systems:
        if system.backend != "local":
            continue
        weights = weights_fingerprint(system.model)
        if weights is not None:  # a hub id has no local files to read
            pinned[f"system:{system.name}:weights"] = weights
        if system.adapter is not None and system.adapter.is_dir():
            pinned[f"system:{system.name}:adapter"] = _folder_digest(system.adapter)
        if system.magic_image is not None:
            pinned[f"system:{system.name}:magic_image"] = _magic_digest(system)
    for label, samples in benchmarks.items():
        pinned[f"benchmark:{label}"] = samples_digest(samples)
    return pinned
