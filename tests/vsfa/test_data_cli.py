import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from conftest import REPO, api_config, run_cli, write_yaml
from standin import scripted_reply

from visalign.testing import StandInServer


def start_data_run(config, out) -> subprocess.Popen:
    """``visalign vsfa data`` in a child process, to be stopped by a signal mid-run."""
    args = [sys.executable, "-m", "visalign", "vsfa", "data", "--config", str(config), "--out", str(out),
            "--no-progress"]  # fmt: skip
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ)


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_sigkill_midway_then_resume_matches_an_uninterrupted_run(corpus, tmp_path):
    with StandInServer(reply=scripted_reply) as reference_server:
        config = write_yaml(tmp_path / "ref.yaml", api_config(reference_server.base_url, corpus))
        done = run_cli("vsfa", "data", "--config", str(config), "--out", str(tmp_path / "ref"), "--no-progress")
        assert done.returncode == 0, done.stderr
        reference_bodies = Counter(r.body_sha256 for r in reference_server.requests if r.method == "POST")

    with StandInServer(reply=scripted_reply, latency_s=0.15) as server:
        config = write_yaml(tmp_path / "run.yaml", api_config(server.base_url, corpus))
        out = tmp_path / "run"
        process = start_data_run(config, out)
        deadline = time.monotonic() + 60
        while len(_lines(out / "images.jsonl")) < 3 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL
        assert not (out / "dataset" / "llava.json").exists()
        killed_at = time.monotonic()  # the server records monotonic start times in this process
        completed = {
            name: [json.loads(line)["id"] for line in _lines(out / f"{name}.jsonl")]
            for name in ("scenes", "images", "vqa")
        }
        assert len(completed["scenes"]) == 6 and 3 <= len(completed["images"]) < 12

        resumed = run_cli("vsfa", "data", "--config", str(config), "--out", str(out), "--no-progress")
        assert resumed.returncode == 0, resumed.stderr
        assert "12 examples, 36 pairs" in resumed.stdout

    for name in ("llava.json", "sharegpt.json"):
        assert (out / "dataset" / name).read_bytes() == (tmp_path / "ref" / "dataset" / name).read_bytes()
    # Records finished before the kill were not redone: each key appears once in each stage file.
    for name, keys in completed.items():
        counts = Counter(json.loads(line)["id"] for line in _lines(out / f"{name}.jsonl"))
        assert all(counts[key] == 1 for key in keys), name
    # The server saw no repeated request for completed work: the same requests as the uninterrupted run, and a
    # body sent twice only if it was in flight when the client died (at most the images client's 2 slots).
    assert sum(reference_bodies.values()) == len(reference_bodies)
    # A request the kill cut off mid-upload reached the server without its body (body None): not work sent.
    bodies = Counter(r.body_sha256 for r in server.requests if r.method == "POST" and r.body is not None)
    assert set(bodies) == set(reference_bodies)
    repeated = [h for h, n in bodies.items() if n > 1]
    assert len(repeated) <= 2
    in_flight = {r.body_sha256 for r in server.requests if r.method == "POST" and r.started <= killed_at}
    finished_before = {r.body_sha256 for r in server.requests if r.method == "POST" and r.finished < killed_at - 2.0}
    assert set(repeated) <= in_flight and not set(repeated) & finished_before
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["resumed"]) == 1


def _assert_one_line_error(result, *needles):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_missing_api_key_names_the_variable(corpus, tmp_path):
    config = api_config("https://api.openai.com/v1", corpus)
    config["scenes"]["llm"]["api_key_env"] = "VISALIGN_TEST_KEY_NOT_SET"
    path = write_yaml(tmp_path / "c.yaml", config)
    env = {k: v for k, v in os.environ.items() if k != "VISALIGN_TEST_KEY_NOT_SET"}
    result = subprocess.run([sys.executable, "-m", "visalign", "vsfa", "data", "--config", str(path), "--out",
                             str(tmp_path / "o")], capture_output=True, text=True, cwd=REPO, env=env)  # fmt: skip
    _assert_one_line_error(result, "VISALIGN_TEST_KEY_NOT_SET")
    assert not (tmp_path / "o").exists()


def test_api_key_never_reaches_files(server, corpus, tmp_path):
    config = api_config(server.base_url, corpus, corpus={"limit": 1})
    config["scenes"]["llm"]["api_key_env"] = "VISALIGN_TEST_KEY"
    path = write_yaml(tmp_path / "c.yaml", config)
    secret = "sk-test-0123456789abcdefghijkl"
    result = run_cli("vsfa", "data", "--config", str(path), "--out", str(tmp_path / "o"), "--no-progress",
                     env={"VISALIGN_TEST_KEY": secret})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert any(r.authorization == f"Bearer {secret}" for r in server.requests)
    for file in (tmp_path / "o").rglob("*"):
        if file.is_file():
            assert secret.encode() not in file.read_bytes(), file
    assert secret not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "mutate,needles",
    [
        (lambda c: c["scenes"].update(per_abstarct=2), ["invalid config", "scenes.per_abstarct"]),
        (lambda c: c["corpus"].update(path="corpus.txt"), ["unknown corpus format"]),
        (lambda c: c["corpus"].update(path="empty.jsonl"), ["corpus is empty"]),
        (lambda c: c["scenes"]["llm"].update(base_url="http://127.0.0.1:9/v1", max_retries=0),
         ["scenes stage stopped", "http://127.0.0.1:9/v1/chat/completions"]),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(corpus, tmp_path, mutate, needles):
    (tmp_path / "corpus.txt").write_text("x")
    (tmp_path / "empty.jsonl").write_text("")
    config = api_config("http://127.0.0.1:9/v1", corpus)
    mutate(config)
    if not str(config["corpus"]["path"]).startswith("/"):
        config["corpus"]["path"] = str(tmp_path / config["corpus"]["path"])
    path = write_yaml(tmp_path / "c.yaml", config)
    result = run_cli("vsfa", "data", "--config", str(path), "--out", str(tmp_path / "o"), "--no-progress")
    _assert_one_line_error(result, *needles)


def test_dry_run_prints_plan_and_cost(corpus, tmp_path):
    path = write_yaml(tmp_path / "c.yaml", api_config("http://127.0.0.1:9/v1", corpus))
    result = run_cli("vsfa", "data", "--config", str(path), "--out", str(tmp_path / "o"), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "6 selected" in result.stdout and "12 scenes planned" in result.stdout
    assert "estimated cost: $0.48" in result.stdout  # images: 12 x $0.04, chat via a local server priced like 4o-mini
    assert not (tmp_path / "o").exists()


def test_bad_shard_spec(corpus, tmp_path):
    path = write_yaml(tmp_path / "c.yaml", api_config("http://127.0.0.1:9/v1", corpus))
    result = run_cli("vsfa", "data", "--config", str(path), "--out", str(tmp_path / "o"), "--shard", "3/3")
    _assert_one_line_error(result, "--shard '3/3'")


def test_the_summary_names_service_errors_that_a_re_run_tries_again(corpus, tmp_path, capsys):
    from cli_in_process import run_in_process

    from visalign.testing import RejectedRequest

    def reply(request):
        text = json.dumps(request["messages"])
        if "question-answer" not in text and "a cloned voice" in text.lower():
            raise RejectedRequest("the provider's filter declines this one")  # one abstract, every time
        return scripted_reply(request)

    with StandInServer(reply=reply) as server:
        path = write_yaml(tmp_path / "c.yaml", api_config(server.base_url, corpus))
        args = ["vsfa", "data", "--config", str(path), "--out", str(tmp_path / "o"), "--no-progress"]
        code, out, _ = run_in_process(args, capsys)
    assert code == 0
    assert out.strip() == (
        f"{tmp_path / 'o' / 'dataset'}: 10 examples, 30 pairs (0 rejected by the neutrality filter); failed: scenes 0, "
        "images 0, vqa 0; service errors, tried again by a re-run: scenes 1, images 0, vqa 0"
    )


def test_ctrl_c_exits_130_with_a_message_and_the_run_resumes(corpus, tmp_path):
    with StandInServer(reply=scripted_reply, latency_s=0.15) as server:
        config = write_yaml(tmp_path / "run.yaml", api_config(server.base_url, corpus))
        out = tmp_path / "run"
        process = start_data_run(config, out)
        images = out / "images.jsonl"
        deadline = time.monotonic() + 60
        while not (images.exists() and images.read_text().count("\n") >= 2) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process.poll() is None, "the job ended before it could be interrupted"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr
        assert stderr.decode().strip().splitlines()[-1] == (
            "interrupted; finished work is kept: re-run the same command to resume"
        )
        assert not (out / "dataset" / "llava.json").exists()

        resumed = run_cli("vsfa", "data", "--config", str(config), "--out", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "12 examples, 36 pairs" in resumed.stdout
