"""``visalign quickstart`` on the folder of a live one: refused at once, naming it, before it writes anything."""

from __future__ import annotations

import pytest
from run_lock_support import Holder, assert_refused_by_live_job

from visalign import quickstart
from visalign.errors import VisalignError

# A live quickstart: stops before its VSFA data stage (its configs and starter sets written) until killed.
LIVE_QUICKSTART = """
    import sys
    import visalign.vsfa

    def pause(*args, **kwargs):
        print("ready", flush=True)
        sys.stdin.read()

    visalign.vsfa.build_dataset = pause
    from visalign.quickstart import run_quickstart
    run_quickstart(sys.argv[1], model=sys.argv[2])
"""


class WentOn(Exception):
    """Raised where the second quickstart would start writing: it got past the lock."""


def test_a_second_quickstart_is_refused_at_once_and_goes_on_once_the_first_is_killed(
    tmp_path, tiny_checkpoints, monkeypatch
):
    out = tmp_path / "qs"
    model = str(tiny_checkpoints["llava"])
    live = Holder(LIVE_QUICKSTART, out, model)

    def went_on(*args, **kwargs):
        raise WentOn

    monkeypatch.setattr(quickstart, "write_starter_sets", went_on)
    try:
        timings = (out / "timings.json").read_bytes() if (out / "timings.json").exists() else None
        with pytest.raises(VisalignError) as refused:  # before locks: it rewrote the live one's configs and went on
            quickstart.run_quickstart(out, model=model)
        assert_refused_by_live_job(str(refused.value), out, live.pid)
        assert ((out / "timings.json").read_bytes() if (out / "timings.json").exists() else None) == timings
        live.kill()
    finally:
        live.close()
    with pytest.raises(WentOn):
        quickstart.run_quickstart(out, model=model)
