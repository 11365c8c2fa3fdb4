"""Config validation, value systems and the CLI's one-line errors (exit 2) for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from visalign.config import load_config
from visalign.errors import VisalignError
from visalign.magic import MagicConfig, get_value_system, load_value_systems

from .helpers import VALUE_SYSTEMS, tiny_config, write_config


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "visalign", *args], capture_output=True, text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_l1_plus_l2_must_be_one(tmp_path):
    path = write_config(tmp_path / "c.yaml", **tiny_config(tmp_path, tmp_path, objective={"l1": 0.7, "l2": 0.4}))
    with pytest.raises(VisalignError, match=r"l1 \+ l2 must equal 1, got 0.7 \+ 0.4 = 1.1"):
        load_config(path, MagicConfig)
    assert_one_line_error(run_cli("magic", "optimize", "--config", str(path), "--out", str(tmp_path / "o")),
                          "objective", "l1 + l2 must equal 1")


def test_test_only_benchmark_is_rejected_as_training_data(tmp_path):
    config = tiny_config(tmp_path, tmp_path)
    config["data"]["sources"].append({"benchmark": "mossbench", "path": "mossbench/information.json",
                                      "role": "benign"})
    path = write_config(tmp_path / "c.yaml", **config)
    with pytest.raises(VisalignError, match="MOSSBench .* test use only"):
        load_config(path, MagicConfig)
    assert_one_line_error(run_cli("magic", "optimize", "--config", str(path), "--out", str(tmp_path / "o")),
                          "test use only", "visalign eval")


def test_valid_weights_and_unknown_key(tmp_path):
    ok = load_config(write_config(tmp_path / "ok.yaml", **tiny_config(tmp_path, tmp_path,
                                                                       objective={"l1": 0.3, "l2": 0.7})), MagicConfig)
    assert (ok.objective.l1, ok.objective.l2) == (0.3, 0.7)
    bad = write_config(tmp_path / "bad.yaml", **tiny_config(tmp_path, tmp_path, optim={"learning_rate": 1.0}))
    with pytest.raises(VisalignError, match="optim.learning_rate"):
        load_config(bad, MagicConfig)


def test_shipped_value_systems_differ_on_professional_advice():
    systems = load_value_systems(VALUE_SYSTEMS)
    assert set(systems) >= {"standard", "strict"}
    for category in ("Legal Opinion", "Financial Advice", "Health Consultation"):
        assert systems["strict"].decides(category) == "harmful"
        assert systems["standard"].decides(category) == "benign"
    for category in ("Illegal Activity", "Malware Generation", "Physical Harm"):
        assert systems["strict"].decides(category) == systems["standard"].decides(category) == "harmful"
    assert systems["standard"].decides("gardening") is None


def test_unknown_value_system_and_overlap(tmp_path):
    with pytest.raises(VisalignError, match=r"unknown value system 'lenient'.*known: standard, strict"):
        get_value_system(VALUE_SYSTEMS, "lenient")
    path = tmp_path / "vs.yaml"
    path.write_text(yaml.safe_dump({"value_systems": {"odd": {"refuse": ["fraud"], "allow": ["Fraud"]}}}))
    with pytest.raises(VisalignError, match="'odd' is invalid: .*both refused and allowed: fraud"):
        load_value_systems(path)


def test_cli_unknown_value_system_in_config(tmp_path):
    path = write_config(tmp_path / "c.yaml", **tiny_config(tmp_path, tmp_path, value_systems=["lenient"]))
    assert_one_line_error(run_cli("magic", "optimize", "--config", str(path), "--out", str(tmp_path / "o")),
                          "unknown value system 'lenient'")


def test_shipped_configs_validate():
    configs = sorted((Path(__file__).resolve().parents[2] / "configs").glob("magic_*.yaml"))
    assert len(configs) >= 2
    for path in configs:
        config = load_config(path, MagicConfig)
        assert config.objective.l1 + config.objective.l2 == pytest.approx(1.0)
        assert config.data.sources


@pytest.mark.parametrize("name", ["manifest", "../standard", "sub/strict", ".hidden"])
def test_a_value_system_name_that_cannot_name_its_output_files_is_refused(tmp_path, name):
    """``manifest`` would write manifest.json over the job's own; a path would write outside the folder."""
    path = tmp_path / "vs.yaml"
    path.write_text(yaml.safe_dump({"value_systems": {name: {"refuse": ["violence"]}}}))
    with pytest.raises(VisalignError, match="cannot name the job's <name>.png"):
        load_value_systems(path)
