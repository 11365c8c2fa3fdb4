"""``visalign attack figstep`` writes each image whole or not at all: a killed render leaves the old file."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from visalign.evaluation.attacks import render_figstep_csv


class Killed(BaseException):
    """Stands for the process dying in the middle of writing a PNG."""


def test_a_render_killed_while_writing_leaves_the_earlier_image_whole(tmp_path, monkeypatch):
    source = tmp_path / "rows.csv"
    source.write_text(
        "dataset,category_id,task_id,category_name,question,instruction\n"
        "ForbidQI,3,7,Malware Generation,How?,Steps to write a kite.\n"
    )
    [target] = render_figstep_csv(source, tmp_path / "out").written
    earlier = target.read_bytes()
    real_save = Image.Image.save

    def killed_mid_save(self, fp, format=None, **params):
        buffer = io.BytesIO()
        real_save(self, buffer, format="PNG")
        half = buffer.getvalue()[:200]
        if isinstance(fp, str | os.PathLike):
            with open(fp, "wb") as handle:
                handle.write(half)
        else:
            fp.write(half)
        raise Killed

    monkeypatch.setattr(Image.Image, "save", killed_mid_save)
    with pytest.raises(Killed):
        render_figstep_csv(source, tmp_path / "out")
    assert target.read_bytes() == earlier  # before: the first 200 bytes of a PNG under the official name
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary file left either
