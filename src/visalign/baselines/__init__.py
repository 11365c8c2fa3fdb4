"""Baselines a reviewer expects next to VSFA and Magic Image, built from the same parts (data, trainer, model)."""

from visalign.baselines.refusal_data import build_refusal_dataset

__all__ = ["build_refusal_dataset"]
