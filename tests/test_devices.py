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


@pytest.mark.parametrize("value", ["cuda:", "cuda:-1", "cuda:x", "CUDA"])
def test_a_device_name_without_a_gpu_number_after_its_colon_is_refused_at_load_time(value):
    with pytest.raises(VisalignError) as refused:
        load_config(CONFIGS / "magic_ci.yaml", MagicConfig, overrides={"device": value})
    message = str(refused.value)
    assert "invalid config at 'device'" in message and f"{value!r} is not a device" in message


def test_each_dtype_name_gives_the_torch_dtype_it_names():
    from visalign.devices import DTYPE_NAMES, torch_dtype

    expected = {
        "float32": torch.float32, "float": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
        "half": torch.float16, "float64": torch.float64, "double": torch.float64,
    }  # fmt: skip
    assert set(DTYPE_NAMES) == set(expected)
    assert {name: torch_dtype(name) for name in expected} == expected


# The machine's GPUs are stood in for: these check our reading of what torch reports, on any machine.


def test_a_gpu_number_past_the_last_gpu_is_refused(monkeypatch):
    from visalign.devices import unavailable_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert unavailable_device("cuda:1") == "device 'cuda:1': this machine has 1 CUDA GPU(s), numbered from 0"
    assert unavailable_device("cuda:0") is None and unavailable_device("cuda") is None


def test_cuda_is_refused_where_torch_cannot_use_a_gpu(monkeypatch):
    from visalign.devices import unavailable_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # a GPU the driver lists but torch cannot use
    for device in ("cuda", "cuda:0"):
        assert unavailable_device(device) == (
            f"device {device!r}: no CUDA GPU that torch can use on this machine; set device: cpu or unset it"
        )


def test_mps_is_refused_where_it_is_not_available(monkeypatch):
    from visalign.devices import unavailable_device

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert unavailable_device("mps") == (
        "device 'mps': MPS (Apple GPU) is not available here; set device: cpu or leave it unset"
    )
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert unavailable_device("mps") is None and unavailable_device("cpu") is None
