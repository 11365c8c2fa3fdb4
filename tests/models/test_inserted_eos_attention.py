"""The end-of-sequence token added after a turn its template leaves open is attended like the answer it ends."""

from __future__ import annotations

import shutil

from test_published_templates import PUBLISHED

from visalign.models import assistant, load_vlm, user


def test_the_inserted_eos_is_attended_and_the_row_has_no_hole(tiny_checkpoints, tmp_path):
    folder = tmp_path / "llava"
    shutil.copytree(tiny_checkpoints["llava"], folder)
    # the template published with llava-hf/llava-1.5-7b-hf closes a turn with a space, not with </s>
    (folder / "chat_template.jinja").write_text(PUBLISHED["llava"])
    vlm = load_vlm(str(folder))
    eos = vlm.tokenizer.eos_token_id
    conversations = [
        [user("Describe it."), assistant("Two cats."), user("And colours?"), assistant("Grey.")],
        [user("What is it?"), assistant("A red car.")],
    ]
    plain = vlm.tokenizer(vlm.render(conversations[1], add_generation_prompt=False))["input_ids"]
    assert eos not in plain  # the template itself gives no EOS: visalign inserts it

    batch = vlm.training_inputs(conversations)
    for row, turns in ((0, 2), (1, 1)):
        ids, labels, mask = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        inserted = [i for i in range(len(ids)) if int(ids[i]) == eos and int(labels[i]) == eos]
        assert len(inserted) == turns  # one after each answer
        assert all(int(mask[i]) == 1 for i in inserted)
        length = int(mask.sum())
        assert mask[:length].tolist() == [1] * length  # attended up to the row's end, then padding only
        assert (labels[length:] == -100).all()
