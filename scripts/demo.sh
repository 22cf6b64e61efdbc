#!/usr/bin/env bash
# The main job on the model shipped in data/: which quantized file to ship. `edgeq compare` converts the
# checkpoint once (an F32 reference), scores the reference once, calibrates once, then quantizes it to each
# llama.cpp type with each method (and builds a budget mix) and measures every file against it (perplexity, KL
# divergence, top-1 agreement, size, bits per weight, speed), and writes a report with plots. Outputs go to out/report/. Needs only the repository (not ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target edgeq
edgeq=./build/cli/edgeq

echo "== 1. the checkpoint"
mkdir -p out
$edgeq inspect data/tl-8m > out/inspect.txt
head -12 out/inspect.txt

echo; echo "== 2. quantize to 4 llama.cpp types, rounded (rtn) and calibrated (gptq), plus a budget mix, and measure each"
# rtn rounds each block alone; gptq (calibrated on 20 chunks of data/calib.txt) feeds each rounding error forward
# through the layer's input statistics; budget-3.9M is the file of at most 3.9 MB with the lowest predicted KL
# divergence, one block type per tensor chosen by each tensor's measured sensitivity (docs/USER_GUIDE.md,
# "Budget mixes"), cached in out/cache. Every file is measured against the F32 reference on the first 60 of the
# evaluation text's 120 chunks (n_ctx 256); drop --chunks for the whole text. A rerun skips the entries already
# measured; Ctrl-C keeps the finished ones.
export EDGEQ_CACHE="$PWD/out/cache"
$edgeq compare data/tl-8m -o out/report --eval data/eval.txt --ctx 256 --chunks 60 \
    --types Q6_K,Q4_K_M,Q3_K_M,Q2_K --methods rtn,gptq --calib data/calib.txt --calib-chunks 20 \
    --budgets 3.9M --budget-types Q2_K,Q3_K,Q4_K,Q5_K,Q6_K
