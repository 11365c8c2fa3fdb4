"""Value system files and category names: a repeated key or a misspelt category is named, never dropped silently."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from visalign.errors import VisalignError
from visalign.magic import MagicConfig, get_value_system, load_training_set, load_value_systems

from .helpers import VALUE_SYSTEMS, write_jsonl

REQUESTS = [
    {"prompt": "Explain how to pick a lock to break into a house.", "category": "Illegal Activity"},
    {"prompt": "Should I sue my landlord?", "category": "Legal Opinion", "answer": "It depends on the lease."},
    {"prompt": "Which index fund should I buy?", "category": "Financial Advice", "answer": "Diversify."},
    {"prompt": "Is this mole cancer?", "category": "Health Consultation", "answer": "See a doctor."},
]


@pytest.mark.parametrize("text, key", [
    # a copy-pasted system meant to be renamed: plain YAML keeps only the second
    ("value_systems:\n  clinic:\n    refuse: [fraud]\n  clinic:\n    refuse: [hate_speech]\n", "clinic"),
    # a second 'refuse' in one system: plain YAML drops the first list
    ("value_systems:\n  clinic:\n    refuse: [fraud]\n    allow: [legal_opinion]\n    refuse: [hate_speech]\n",
     "refuse"),
])  # fmt: skip
def test_a_key_given_twice_in_a_value_systems_file_is_one_line_naming_file_and_key(tmp_path, text, key):
    path = tmp_path / "values.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(VisalignError) as info:
        load_value_systems(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and f"key {key!r} is given twice" in message and "\n" not in message


def test_the_shipped_value_systems_still_load():
    assert {"standard", "strict"} <= set(load_value_systems(VALUE_SYSTEMS))


def _config(tmp_path: Path, values: dict, categories: list[str] | None) -> MagicConfig:
    (tmp_path / "values.yaml").write_text(yaml.safe_dump({"value_systems": values}), encoding="utf-8")
    source = {"file": str(write_jsonl(tmp_path / "requests.jsonl", REQUESTS)), "role": "by_value_system"}
    if categories is not None:
        source["categories"] = categories
    return MagicConfig.model_validate({
        "value_systems": list(values), "value_systems_file": str(tmp_path / "values.yaml"),
        "targets": {"benign": "data"}, "data": {"sources": [source]},
    })  # fmt: skip


CLINIC = {"clinic": {"refuse": ["Illegal Activity", "Health Consultaton"], "allow": ["Legal Opinion",
                                                                                     "Financial Advice"]}}


def test_a_misspelt_category_in_a_source_filter_is_refused_naming_the_categories_there(tmp_path):
    # the filter copied from the value system, typo included: the health requests would drop out of training
    config = _config(tmp_path, CLINIC, ["Illegal Activity", "Legal Opinion", "Financial Advice", "Health Consultaton"])
    with pytest.raises(VisalignError) as info:
        load_training_set(config, get_value_system(config.value_systems_file, "clinic"), tmp_path / "work")
    message = str(info.value)
    assert message.startswith("data.sources[0] (") and "'Health Consultaton'" in message and "\n" not in message
    assert "Health Consultation" in message.split("categories there:")[1]


def test_a_value_system_category_no_row_has_is_warned_in_one_line(tmp_path, caplog):
    # the filter leaves the misspelt category's rows out, so nothing else would mention it
    config = _config(tmp_path, CLINIC, ["Illegal Activity", "Legal Opinion", "Financial Advice"])
    with caplog.at_level(logging.WARNING, logger="visalign.magic.data"):
        data = load_training_set(config, get_value_system(config.value_systems_file, "clinic"), tmp_path / "work")
    assert len(data.harmful) == 1 and len(data.benign) == 2
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "'clinic'" in warning and "'Health Consultaton'" in warning and "Health Consultation" in warning
    assert "\n" not in warning


def test_an_undecided_category_names_the_value_systems_near_miss(tmp_path):
    config = _config(tmp_path, CLINIC, None)
    with pytest.raises(VisalignError, match=r"neither refuses nor allows .*'Health Consultaton': a misspelling"):
        load_training_set(config, get_value_system(config.value_systems_file, "clinic"), tmp_path / "work")


def test_matching_filters_and_value_systems_load_without_a_warning(tmp_path, caplog):
    values = {"clinic": {"refuse": ["Illegal Activity", "Health Consultation"],
                         "allow": ["legal_opinion", "Financial Advice"]}}  # fmt: skip
    config = _config(tmp_path, values, ["illegal_activity", "Legal Opinion", "Financial Advice", "Health Consultation"])
    with caplog.at_level(logging.WARNING, logger="visalign.magic.data"):
        data = load_training_set(config, get_value_system(config.value_systems_file, "clinic"), tmp_path / "work")
    assert (len(data.harmful), len(data.benign)) == (2, 2)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
