"""A mistyped dtype or device is a one-line error: in a config at load time, in ``load_vlm`` before any weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from visalign.config import load_config
from visalign.errors import VisalignError
from visalign.magic import MagicConfig
from visalign.models import load_vlm
from visalign.vsfa import VsfaDataConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: A CUDA device this machine lacks: any CUDA one without a GPU, else the one after the last GPU.
ABSENT_GPU = f"cuda:{torch.cuda.device_count()}"


@pytest.mark.parametrize(("field", "value", "allowed"), [
    ("dtype", "bf16", "use float32, bfloat16 or float16"),
    ("device", "gpu", "use cpu, cuda, cuda:N (the Nth GPU) or mps"),
])  # fmt: skip
def test_a_magic_config_with_a_mistyped_dtype_or_device_is_refused_at_load_time(field, value, allowed):
    with pytest.raises(VisalignError) as refused:
        load_config(CONFIGS / "magic_ci.yaml", MagicConfig, overrides={field: value})
    message = str(refused.value)
    assert f"invalid config at '{field}'" in message and repr(value) in message and allowed in message
    # the names that worked before still do, as written (a config written for another machine loads here)
    good = {"dtype": ["bfloat16", "float32", "float16", "half"], "device": ["cpu", "cuda", "cuda:1", "mps"]}[field]
    assert [
        getattr(load_config(CONFIGS / "magic_ci.yaml", MagicConfig, overrides={field: g}), field) for g in good
    ] == good


@pytest.mark.parametrize(("section", "field", "value"), [
    ("scenes.llm", "dtype", "fp16"), ("vqa.llm", "device", "cuda0"),
    ("images.generator", "dtype", "bf16"), ("images.generator", "device", "GPU"),
])  # fmt: skip
def test_a_vsfa_data_config_with_a_mistyped_dtype_or_device_is_refused_at_load_time(tmp_path, section, field, value):
    data = yaml.safe_load((CONFIGS / "vsfa_data_offline.yaml").read_text())
    if section == "images.generator":
        data["images"]["generator"] = {"backend": "diffusers"}
    parent, child = section.split(".")
    data[parent][child][field] = value
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(VisalignError, match=rf"invalid config at '{section}\.\w+\.{field}': .*{value!r} is not a"):
        load_config(path, VsfaDataConfig)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dtype": "bf16"}, "dtype 'bf16' is not a weights dtype; use float32, bfloat16 or float16"),
    ({"device": "gpu"}, "device 'gpu' is not a device; use cpu, cuda"),
    ({"device": ABSENT_GPU}, f"device '{ABSENT_GPU}': "),
])  # fmt: skip
def test_load_vlm_refuses_a_bad_dtype_or_an_absent_device_in_one_line(tiny_checkpoints, kwargs, message):
    with pytest.raises(VisalignError) as refused:
        load_vlm(str(tiny_checkpoints["llava"]), **kwargs)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)
