#!/usr/bin/env bash
# The main job on the model shipped in data/: describe the checkpoint, convert it to GGUF, quantize it to
# several llama.cpp mixes (one pass from the checkpoint each), and compare what quantization cost:
# perplexity, KL divergence and top-1 agreement against the unquantized model, with size and bits per weight.
# Outputs go to out/. Needs only the repository (not ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target edgeq
edgeq=./build/cli/edgeq
mkdir -p out
export EDGEQ_PROGRESS=1

echo "== 1. the checkpoint"
$edgeq inspect data/tl-8m > out/inspect.txt
head -22 out/inspect.txt

echo; echo "== 2. convert to GGUF: an f32 reference, and llama.cpp's default (f16)"
$edgeq convert data/tl-8m -o out/tl-8m-F32.gguf --outtype f32
$edgeq convert data/tl-8m -o out/tl-8m-F16.gguf

echo; echo "== 3. quantize (straight from the checkpoint, no intermediate file)"
for t in Q8_0 Q6_K Q5_K_M Q4_K_M IQ4_XS Q3_K_M Q2_K; do
  $edgeq quantize data/tl-8m -o "out/tl-8m-$t.gguf" --type "$t" > "out/quantize-$t.txt"
  grep -E "file size|bits per weight|bpw|time" "out/quantize-$t.txt" | sed "s/^/  $t /" || true
done

echo; echo "== 4. what each level costs, against the f32 reference (llama-perplexity's protocol, n_ctx 256)"
$edgeq compare out/tl-8m-F32.gguf out/tl-8m-F16.gguf out/tl-8m-{Q8_0,Q6_K,Q5_K_M,Q4_K_M,IQ4_XS,Q3_K_M,Q2_K}.gguf \
  -f data/eval.txt --ctx 256 | tee out/compare.txt

echo; echo "== 5. the Q4_K_M file generates text"
$edgeq generate out/tl-8m-Q4_K_M.gguf -p "Once upon a time" -n 24
echo
echo "Done: GGUF files and out/compare.txt are in out/."
