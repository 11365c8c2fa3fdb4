"""Where a Magic Image config that names no ``data.benchmarks_dir`` reads benchmark files, and the error when absent.

Until 2026-11-24 the default was computed from the installed package's location, so outside an editable install
it pointed inside the virtualenv, and the loader's error named the source's path instead of the folder settings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import visalign.paths as paths
from visalign.errors import VisalignError
from visalign.magic.config import DataConfig
from visalign.magic.data import load_training_set
from visalign.magic.value_systems import get_value_system

from .helpers import VALUE_SYSTEMS, make, write_config
from .test_config import assert_one_line_error, run_cli

XSTEST = {"benchmark": "xstest", "path": "xstest/xstest_prompts.csv", "role": "benign", "expected": "comply"}


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    """A repository folder with ``../shared/benchmarks`` beside it, as the working directory; no env override."""
    (tmp_path / "shared" / "benchmarks").mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    monkeypatch.delenv("VISALIGN_BENCHMARKS", raising=False)
    return tmp_path / "repo"


def test_the_default_is_shared_benchmarks_beside_the_working_directory(checkout, monkeypatch):
    assert DataConfig(sources=[XSTEST]).resolved_benchmarks_dir() == checkout.parent / "shared" / "benchmarks"
    monkeypatch.setenv("VISALIGN_BENCHMARKS", str(checkout / "elsewhere"))
    assert DataConfig(sources=[XSTEST]).resolved_benchmarks_dir() == checkout / "elsewhere"
    assert DataConfig(sources=[XSTEST], benchmarks_dir="mine").resolved_benchmarks_dir() == Path("mine")


def test_an_installed_package_never_looks_inside_its_virtualenv(tmp_path, monkeypatch):
    # The package as a plain `pip install` lays it out; run from a folder with no ../shared/benchmarks.
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    monkeypatch.setattr(paths, "__file__", str(site / "visalign" / "paths.py"))
    monkeypatch.delenv("VISALIGN_BENCHMARKS", raising=False)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    resolved = DataConfig(sources=[XSTEST]).resolved_benchmarks_dir()
    assert resolved == tmp_path / "shared" / "benchmarks"
    assert not resolved.is_relative_to(tmp_path / "venv")


def test_a_missing_benchmarks_folder_names_the_settings_that_choose_it(tmp_path, tiny_checkpoints, monkeypatch):
    config = make(
        tmp_path, tiny_checkpoints["llava"], data={"benchmarks_dir": str(tmp_path / "nowhere"), "sources": [XSTEST]}
    )
    with pytest.raises(VisalignError) as missing:
        load_training_set(config, get_value_system(VALUE_SYSTEMS, "standard"), tmp_path / "work")
    message = str(missing.value)
    assert str(tmp_path / "nowhere") in message and "data.benchmarks_dir" in message
    assert "$VISALIGN_BENCHMARKS" in message

    # A folder that exists but lacks the file: the message names the file and the same settings.
    (tmp_path / "benchmarks").mkdir()
    config = make(
        tmp_path, tiny_checkpoints["llava"], data={"benchmarks_dir": str(tmp_path / "benchmarks"), "sources": [XSTEST]}
    )
    with pytest.raises(VisalignError, match=r"xstest_prompts\.csv: not found .*data\.benchmarks_dir"):
        load_training_set(config, get_value_system(VALUE_SYSTEMS, "standard"), tmp_path / "work")


def test_the_command_reports_a_missing_default_folder_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("VISALIGN_BENCHMARKS", str(tmp_path / "not-there"))
    path = write_config(
        tmp_path / "c.yaml",
        model="default",
        value_systems_file=str(VALUE_SYSTEMS),
        data={"sources": [XSTEST, {**XSTEST, "role": "harmful", "expected": None}]},
    )
    result = run_cli("magic", "optimize", "--config", str(path), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, str(tmp_path / "not-there"), "data.benchmarks_dir", "$VISALIGN_BENCHMARKS")
