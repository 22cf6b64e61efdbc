#!/usr/bin/env bash
# The main job on the model shipped in data/: which quantized file to ship. `edgeq compare` converts the
# checkpoint once (an F32 reference), scores the reference once, then quantizes it to each llama.cpp type and
# measures every file against it (perplexity, KL divergence, top-1 agreement, size, bits per weight, speed),
# and writes a report with plots. Outputs go to out/report/. Needs only the repository (not ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target edgeq
edgeq=./build/cli/edgeq

echo "== 1. the checkpoint"
mkdir -p out
$edgeq inspect data/tl-8m > out/inspect.txt
head -12 out/inspect.txt

echo; echo "== 2. quantize to 7 llama.cpp types and measure each against the F32 reference (n_ctx 256)"
# The first 60 of the text's 120 chunks keep the demo short; drop --chunks for the whole text (the
# table in docs/USER_GUIDE.md). A rerun skips the entries already measured; Ctrl-C keeps the finished ones.
$edgeq compare data/tl-8m -o out/report --eval data/eval.txt --ctx 256 --chunks 60
