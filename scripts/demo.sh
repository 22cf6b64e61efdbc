#!/usr/bin/env bash
# The main job on the model shipped in data/: describe the checkpoint, convert it to GGUF, quantize it,
# and measure what quantization cost (perplexity and KL divergence against the unquantized model).
# Outputs go to out/. Needs only the repository (not ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DEDGEQ_TESTS=OFF -DEDGEQ_BENCH=OFF >/dev/null
cmake --build build -j"$(nproc)" --target edgeq
edgeq=./build/cli/edgeq
mkdir -p out
export EDGEQ_PROGRESS=1

echo "== 1. the checkpoint"
$edgeq inspect data/tl-8m | head -30

echo "== 2. convert to GGUF (f32 reference and llama.cpp's default f16)"
$edgeq convert data/tl-8m -o out/tl-8m-F32.gguf --outtype f32
$edgeq convert data/tl-8m -o out/tl-8m-F16.gguf
$edgeq inspect out/tl-8m-F16.gguf | tail -8
