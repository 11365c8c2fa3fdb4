#!/usr/bin/env bash
# The GPU figures of benchmarks/RESULTS.md and docs/EXPERIMENTS.md, run on a bare GPU machine that has PyTorch
# but no network (the lent H100 of this project). Each step is one call; they share $VISALIGN_HOME between calls.
#
#   bash benchmarks/gpu_session.sh STEP [STEP...]
#
# Wheels for .whl/ (python 3.12, manylinux; what the CUDA image of 2026-11 lacks or has at other versions):
#   transformers==5.23.0 peft==0.21.2 pydantic==2.14.3 pydantic_core==2.50.4 annotated-types typing-inspection
#   gguf==0.19.0 typer==0.29.2 datasets==5.2.0 dill multiprocess
# A call carries at most 64 MiB, so the GGUF (98 MB) travels as .gg/part1 and .gg/part2 in two back-to-back calls.
# `bash benchmarks/prepare_gpu_carry.sh` rebuilds .whl/, .whl2/, .gg/part1, .gg/part2, .bench/ and .bench2/ here
# (a fresh checkout has none): part1 is 40 MiB so that .whl + .whl2 + part1 fit one call, part2 + .bench the next.
#
# Steps:
#   setup        install the wheels in .whl/ (transformers, peft, pydantic, gguf... at the tested versions) into
#                $SITE; copy the benchmark files in .bench/ and .bench2/ to $BENCH; print versions and the GPU
#   bench-files  copy the benchmark files in .bench/ and .bench2/ to $BENCH (setup does it too)
#   gguf-part1   keep .gg/part1 (the first half of SmolLM2's GGUF, which travels in two calls) in $HOME
#   gguf-join    join it with .gg/part2, check the sha256 and place it where build-default looks for it
#   foundation   7B scale check of the four families; training throughput (stock vs ours)
#   train-bench  training throughput alone, with --profile (top operators of each variant); the default variants
#                include compile-loop, the 2026-11-22 headline, beside the batched vision attention ones
#   gen-bench    generation throughput on the embedded model alone
#   weights-check  the trainer's finite-weights check after each optimiser step, foreach norms against the
#                per-tensor isfinite it replaced, on Qwen2.5-7B's r=16 LoRA shapes (benchmarks/weights_check.py;
#                after setup; no model, seconds)
#   fsdp-check   vsfa train under configs/accelerate/fsdp.yaml (one process) against a plain run, with a resume
#                from the sharded checkpoint; a tiny model, about a minute (benchmarks/distributed_check.py)
#   magic-bench  Magic Image throughput (7B shape); generation throughput on the embedded model
#   pipeline-7b  the quickstart's configs, model swapped for the 7B-shaped Qwen2.5-VL, a few steps each
#   magic-full   configs/magic_default.yaml on the embedded model (two value systems, 600 steps)
#   exp-magic    experiment 1: Magic Image on AdvBench, evaluated on held-out StrongREJECT, XSTest, SafeBench
#   exp-magic-typo  experiment 1b: the same with benign typographic images in training, evaluated beside
#                experiment 1's image with a typographic control (trains experiment 1's image too when absent);
#                in two calls: exp-magic-typo-train, then exp-magic-typo-eval
#   exp-vsfa     experiment 2: VSFA data at thousands of pairs, LoRA, the refusal fine-tuning baseline, and
#                their evaluation; in three calls: exp-vsfa-data, exp-vsfa-train, exp-vsfa-eval
#
# Measured on one H100 (2026-11-22): setup 20 s; foundation 192 s; magic-bench 110 s; pipeline-7b 160 s;
# magic-full 424 s; exp-magic 186 s + 88 s. A call may run 10 minutes: magic-full and exp-magic do not fit in one.
# Measured on one H100 (2026-11-23): train-bench 222 s; gen-bench 58 s; exp-vsfa-data 192 s; exp-vsfa-train
# 295 s; exp-vsfa-eval ~335 s; exp-magic-typo-train ~435 s (248 s for 1b, ~186 s for experiment 1's image).
# A call that runs out of time loses nothing finished: optimize, train and eval all resume on the next call.
# Results and logs land in $RESULTS (default $HOME/visalign-results); when $OUT is set, $OUT/results.tgz holds them.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SITE=${SITE:-$HOME/visalign-site}
BENCH=${BENCH:-$HOME/visalign-benchmarks}
RESULTS=${RESULTS:-$HOME/visalign-results}
export VISALIGN_HOME=${VISALIGN_HOME:-$HOME/visalign-home}
export VISALIGN_BENCHMARKS=$BENCH
export PYTHONPATH=$SITE:$ROOT/src
export PYTHONUNBUFFERED=1
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
DEFAULT_MODEL_SHA256=36cfb81c58e5a696433439406cd8d96556237089f5c03e032a14e65e12999cad  # builder version 3
PY=${PYTHON:-python3}
mkdir -p "$RESULTS" "$VISALIGN_HOME/downloads"
cd "$ROOT" || exit 1

# Configs name the benchmarks as ../../../shared/benchmarks relative to configs/experiments: point that at $BENCH.
link_benchmarks() {
  [ -e "$ROOT/../shared/benchmarks" ] || { mkdir -p "$ROOT/../shared" && ln -s "$BENCH" "$ROOT/../shared/benchmarks"; }
}

package() {  # one archive in $OUT (the machine returns at most 8 files), refreshed after every step
  if [ -n "${OUT:-}" ]; then tar czf "$OUT/results.tgz" -C "$RESULTS" .; fi
}

timed() {  # timed NAME COMMAND...: run, log, and record the wall time
  local name=$1 start rc
  shift
  echo "=== $name: $*"
  start=$(date +%s%N)
  "$@" 2>&1 | tee "$RESULTS/$name.log"
  rc=${PIPESTATUS[0]}
  echo -e "$name\texit $rc\t$(( ($(date +%s%N) - start) / 1000000 )) ms" | tee -a "$RESULTS/steps.tsv"
  package
  return "$rc"
}

step_setup() {
  local wheels
  shopt -s nullglob  # .whl2/ (datasets, dill, multiprocess) travels beside .whl/; either may be absent
  wheels=(.whl/*.whl .whl2/*.whl)
  shopt -u nullglob
  if [ ${#wheels[@]} -gt 0 ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}"
  fi
  step_bench_files
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, transformers, peft, pydantic; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'peft', peft.__version__, 'pydantic', pydantic.__version__, torch.cuda.get_device_name())"
  df -h "$HOME" | tail -1
}

step_bench_files() {  # the benchmark files carried in .bench/ and .bench2/ (each call carries at most 64 MiB)
  for d in .bench .bench2; do if [ -d $d ]; then mkdir -p "$BENCH" && cp -r $d/. "$BENCH/"; fi; done
  link_benchmarks
}

step_gguf_part1() { cp .gg/part1 "$HOME/smollm2.gguf.part1" && ls -l "$HOME/smollm2.gguf.part1"; }

step_gguf_join() {
  local target=$VISALIGN_HOME/downloads/SmolLM2-135M-Instruct.Q4_1.gguf
  cat "$HOME/smollm2.gguf.part1" .gg/part2 > "$target.part" || return 1
  echo "$GGUF_SHA256  $target.part" | sha256sum -c - && mv "$target.part" "$target"
  $PY -m visalign models build-default
  # Builder version 3 is meant to give the same bits everywhere; the development machine's build (torch 2.13 and
  # 2.14.1, AVX2 and scalar kernels) has this model.safetensors. Say loudly if the lent machine's differs.
  cp "$VISALIGN_HOME/models/smollm2-vlm/visalign_model.json" "$RESULTS/default_model_metadata.json"
  if grep -q "$DEFAULT_MODEL_SHA256" "$RESULTS/default_model_metadata.json"; then
    echo "default model: identical to the development machine's build"
  else
    echo "default model: DIFFERENT from the development machine's build ($DEFAULT_MODEL_SHA256)"
    grep -A1 weights_sha256 "$RESULTS/default_model_metadata.json"
  fi
}

step_foundation() {
  timed scale_check_7b $PY benchmarks/scale_check_7b.py --out "$RESULTS/scale_check_7b.json"
  timed train_throughput $PY benchmarks/train_throughput.py && cp benchmarks/results/train_throughput.json "$RESULTS/"
}

step_train_bench() {
  timed train_throughput $PY benchmarks/train_throughput.py --profile
  cp benchmarks/results/train_throughput.json benchmarks/results/train_throughput_profile_*.txt "$RESULTS/"
  package
}

step_gen_bench() {
  timed generation_throughput $PY benchmarks/generation_throughput.py \
    --out "$RESULTS/generation_throughput_gpu.json"
}

step_weights_check() {
  timed weights_check $PY benchmarks/weights_check.py --device cuda --json "$RESULTS/weights_check_gpu.json"
}

step_fsdp_check() {
  timed fsdp_check $PY benchmarks/distributed_check.py --config configs/accelerate/fsdp.yaml \
    --out "$RESULTS/distributed_check_fsdp.json"
}

step_magic_bench() {
  timed magic_throughput $PY benchmarks/magic_throughput.py --out "$RESULTS/magic_throughput.json"
  step_gen_bench
}

step_pipeline_7b() {
  local model=$VISALIGN_HOME/bench/qwen2_5_vl-7b-bfloat16
  timed pipeline_7b $PY -m visalign quickstart --scale tiny --model "$model" --out "$HOME/runs/pipeline-7b"
  cp "$HOME/runs/pipeline-7b/timings.json" "$RESULTS/pipeline_7b_timings.json"
  cp "$HOME/runs/pipeline-7b/summary.json" "$RESULTS/pipeline_7b_summary.json"
}

step_magic_full() {
  timed magic_full $PY -m visalign magic optimize --config configs/magic_default.yaml --out "$HOME/runs/magic_default"
  # the sidecars and PNGs; work/ (checkpoints, cached targets: ~45 MB) stays on the machine
  tar czf "$RESULTS/magic_default.tgz" --exclude=work -C "$HOME/runs" magic_default
}

step_exp_magic() {
  mkdir -p runs && ln -sfn "$HOME/runs/exp-magic" runs/exp-magic
  timed exp_magic_train $PY -m visalign magic optimize --config configs/experiments/magic_advbench.yaml \
    --out "$HOME/runs/exp-magic"
  timed exp_magic_eval $PY -m visalign eval --config configs/experiments/eval_magic_heldout.yaml \
    --out "$HOME/runs/exp-magic-eval"
  tar czf "$RESULTS/exp_magic.tgz" --exclude=work -C "$HOME/runs" exp-magic exp-magic-eval
}

step_exp_magic_typo() {
  step_exp_magic_typo_train
  step_exp_magic_typo_eval
}

step_exp_magic_typo_train() {
  mkdir -p runs && for d in exp-magic exp-magic-typo; do ln -sfn "$HOME/runs/$d" "runs/$d"; done
  # optimize resumes from its last checkpoint, so an image finished in an earlier call is not trained again
  timed exp_magic_train $PY -m visalign magic optimize --config configs/experiments/magic_advbench.yaml \
    --out "$HOME/runs/exp-magic"
  timed exp_magic_typo_train $PY -m visalign magic optimize \
    --config configs/experiments/magic_advbench_typo_control.yaml --out "$HOME/runs/exp-magic-typo"
  tar czf "$RESULTS/exp_magic_typo_images.tgz" --exclude=work -C "$HOME/runs" exp-magic exp-magic-typo
}

step_exp_magic_typo_eval() {
  mkdir -p runs && for d in exp-magic exp-magic-typo; do ln -sfn "$HOME/runs/$d" "runs/$d"; done
  timed exp_magic_typo_eval $PY -m visalign eval --config configs/experiments/eval_magic_typo_control.yaml \
    --out "$HOME/runs/exp-magic-typo-eval"
  tar czf "$RESULTS/exp_magic_typo.tgz" --exclude=work -C "$HOME/runs" exp-magic exp-magic-typo exp-magic-typo-eval
}

step_exp_vsfa() {
  step_exp_vsfa_data
  step_exp_vsfa_train
  step_exp_vsfa_eval
}

step_exp_vsfa_data() {
  mkdir -p runs && for d in exp-vsfa-data exp-vsfa-train; do ln -sfn "$HOME/runs/$d" "runs/$d"; done
  timed exp_vsfa_data $PY -m visalign vsfa data --config configs/experiments/vsfa_data_thousands.yaml \
    --out "$HOME/runs/exp-vsfa-data"
}

link_vsfa_runs() {
  mkdir -p runs && for d in exp-vsfa-data exp-vsfa-train exp-refusal-data exp-refusal-train; do
    ln -sfn "$HOME/runs/$d" "runs/$d"
  done
}

step_exp_vsfa_train() {
  link_vsfa_runs
  timed exp_vsfa_train $PY -m visalign vsfa train --config configs/experiments/vsfa_train_thousands.yaml \
    --out "$HOME/runs/exp-vsfa-train"
  timed exp_refusal_data $PY -m visalign baseline refusal-data \
    --config configs/experiments/magic_advbench_typo_control.yaml --out "$HOME/runs/exp-refusal-data"
  timed exp_refusal_train $PY -m visalign vsfa train --config configs/experiments/refusal_ft_train.yaml \
    --out "$HOME/runs/exp-refusal-train"
}

step_exp_vsfa_eval() {
  link_vsfa_runs
  timed exp_finetuned_eval $PY -m visalign eval --config configs/experiments/eval_finetuned.yaml \
    --out "$HOME/runs/exp-finetuned-eval"
  # no weights, checkpoints or images: the archive must stay under the 16 MiB a returned file may have
  tar czf "$RESULTS/exp_vsfa.tgz" --exclude=checkpoints --exclude=work --exclude=images --exclude=attacks \
    --exclude='*.safetensors' -C "$HOME/runs" exp-vsfa-train exp-refusal-train exp-finetuned-eval
}

for step in "$@"; do
  "step_${step//-/_}" || echo "!!! step $step failed (exit $?)"
done
package
echo "=== steps so far"
cat "$RESULTS/steps.tsv" 2>/dev/null
exit 0
