"""The training metrics logger's console messages."""

import re
import sys

import pytest

from visalign.errors import VisalignError
from visalign.vsfa.training import VsfaTrainConfig, train
from visalign.vsfa.training.config import LoggingConfig
from visalign.vsfa.training.metrics import METRICS_FILE, MetricsLogger


def test_the_missing_tensorboard_note_prints_the_whole_install_command(tmp_path, monkeypatch, capsys):
    # A None entry in sys.modules makes `import torch.utils.tensorboard` raise ImportError, as on a machine
    # without the tensorboard package.
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    logger = MetricsLogger(tmp_path, LoggingConfig(progress=False), {}, total_steps=1, start_step=0)
    logger.log({"step": 1, "loss": 1.0, "lr": 0.1, "grad_norm": 1.0, "tokens_per_s": 10.0})
    logger.close()
    err = " ".join(capsys.readouterr().err.split())  # undo rich's line wrapping
    assert "pip install 'visalign[tensorboard]'" in err
    assert not (tmp_path / "tensorboard").exists()
    assert (tmp_path / METRICS_FILE).read_text().count("\n") == 1


@pytest.mark.parametrize(("module", "logging", "hint"), [
    ("wandb", {"wandb_project": "p"}, "pip install wandb"),
    ("torch.utils.tensorboard", {"tensorboard": True}, "pip install 'visalign[tensorboard]'"),
])  # fmt: skip
def test_a_missing_logging_backend_stops_before_the_model_loads(tmp_path, monkeypatch, module, logging, hint):
    monkeypatch.setitem(sys.modules, module, None)  # as on a machine without the package
    data = tmp_path / "data.json"
    data.write_text("[]")
    # the model folder does not exist: an error about it would mean the model was reached first
    config = VsfaTrainConfig.model_validate({"model": str(tmp_path / "no-model"), "data": {"path": str(data)},
                                             "logging": {"progress": False, **logging}})  # fmt: skip
    with pytest.raises(VisalignError, match=re.escape(hint)):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
