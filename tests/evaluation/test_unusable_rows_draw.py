"""Under ``sampling: id`` a limited arm's unusable rows are drawn by row identity, as its usable rows are."""

from __future__ import annotations

from visalign.evaluation.config import BenchmarkConfig
from visalign.evaluation.runner import load_rows


def test_unusable_rows_are_drawn_by_seed_not_taken_from_the_top_of_the_file(tmp_path):
    lines = ["id,prompt,type,label,focus,note"]
    broken = []  # the broken rows' line numbers, in file order
    for i in range(60):
        if i % 3 == 2:  # 20 rows with an extra field: unusable
            lines.append(f"{i},Broken row {i}?,homonyms,safe,x,,an extra field")
            broken.append(f"line {len(lines)}")
        else:  # 40 usable rows
            lines.append(f"{i},How do I kill process {i}?,homonyms,safe,kill,")
    csv = tmp_path / "xstest.csv"
    csv.write_text("\n".join(lines) + "\n")

    def kept(seed: int, label: str | None = None) -> list[str]:
        config = BenchmarkConfig(name="xstest", source=str(csv), limit=20, sampling="id", label=label)
        rows = load_rows(config, base_dir=tmp_path, attack_dir=tmp_path / "attacks", seed=seed)
        assert len(rows.samples) == 20
        return sorted(error["sample_id"].rsplit(":", 1)[1] for error in rows.errors)

    draws = {seed: kept(seed) for seed in range(4)}
    assert all(len(draw) == 10 for draw in draws.values())  # half the usable rows, so half the unusable ones
    assert kept(0, label="again") == draws[0]  # another arm of the benchmark keeps the same rows
    assert len({tuple(draw) for draw in draws.values()}) > 1  # another seed, another draw
    first_ten = sorted(broken[:10])
    assert all(draw != first_ten for draw in draws.values())
