#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (-O1 with line tables: crash reports keep file:line, the build stays
# short for CI) and runs each briefly, seeded with small real inputs.
# Usage: scripts/fuzz-smoke.sh [seconds-per-target]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shared=${EDGEQ_SHARED_DIR:-$(pwd)/../shared}
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -gline-tables-only" -DEDGEQ_FUZZ=ON -DEDGEQ_TESTS=OFF -DEDGEQ_BENCH=OFF \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
targets=$(ls fuzz/fuzz_*.cpp | xargs -n1 basename | sed "s/\.cpp$//")
cmake --build build-fuzz -j"$(nproc)" --target $targets
seeds=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$seeds"' EXIT
mkdir -p "$seeds/gguf" "$seeds/safetensors" "$seeds/onnx"
# small real seeds (vocab-free headers are cut to keep the corpus fast)
head -c 65536 "$shared/golden/stories260K-F32.gguf" > "$seeds/gguf/stories-head.gguf" || true
head -c 4096 "$shared/golden/tl-8m-Q4_K_M.gguf" > "$seeds/gguf/q4km-head.gguf" || true
head -c 65536 "$shared/models/stories260K-sharded/model-00003-of-00003.safetensors" > "$seeds/safetensors/shard.safetensors" || true
# a split GGUF set (two files concatenated; fuzz_gguf cuts it at the second magic), written by the fuzz smoke test
if [ -x build/tests/test_fuzz_smoke ]; then
  EDGEQ_FUZZ_SEED_DIR="$seeds/gguf" build/tests/test_fuzz_smoke --gtest_filter='FuzzSmoke.GgufSplitSet' >/dev/null 2>&1 || true
fi
# ONNX: small synthetic Llama graphs written by the ONNX test (a prefix of a real export never parses); only
# the OnnxRoles tests build them (check_recovery writes each graph), so the other ONNX tests are not run again.
if [ -x build/tests/test_onnx ]; then
  EDGEQ_ONNX_SEED_DIR="$seeds/onnx" build/tests/test_onnx --gtest_filter='OnnxRoles.*' >/dev/null 2>&1 || true
fi
# The targets run side by side (the time limit is wall-clock time per target), then report in order.
status=0
names=()
for t in build-fuzz/fuzz/fuzz_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t"); kind=${name#fuzz_}
  corpus="$seeds/$kind"; mkdir -p "$corpus"
  "$t" -max_total_time="$secs" -rss_limit_mb=2048 -max_len=131072 -print_final_stats=1 "$corpus" 2>"$seeds/$name.log" &
  pids+=($!); names+=("$name")
done
for i in "${!pids[@]}"; do
  name=${names[$i]}
  echo "== $name for ${secs}s"
  if ! wait "${pids[$i]}"; then
    tail -40 "$seeds/$name.log"; status=1
  else
    grep -E "stat::number_of_executed_units|Done" "$seeds/$name.log" | tail -2
  fi
done
exit $status
