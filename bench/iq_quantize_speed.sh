#!/usr/bin/env bash
# `edgeq quantize` against `llama-quantize` to IQ2_XS (or TYPE) with an importance matrix, side by side on tl-8m's
# F32 conversion, with the golden imatrix (../shared/golden/tl-8m.imatrix), the same thread count and the same
# tensor types: llama-quantize's IQ2_XS mix, which edgeq is given as --tensor-type overrides read from the
# llama-quantize file it just wrote (so the comparison holds before edgeq has the mix itself). Each tool runs
# RUNS times alternately; the best wall time of each is reported, and the run fails when edgeq's is more than
# 10% above llama-quantize's. Skipped (exit 0) when LLAMA_CPP_BIN is unset.
#
#   bench/iq_quantize_speed.sh [BUILD_DIR]   env: LLAMA_CPP_BIN (llama.cpp's bin/ with llama-quantize),
#                                            THREADS (2), TYPE (IQ2_XS), RUNS (3)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
edgeq=$build/cli/edgeq
shared=$here/../shared
threads=${THREADS:-2}
type=${TYPE:-IQ2_XS}
runs=${RUNS:-3}
lbin=${LLAMA_CPP_BIN:-}
[[ -n $lbin ]] || { echo "iq_quantize_speed.sh: LLAMA_CPP_BIN unset, skipped"; exit 0; }
[[ -x $edgeq ]] || { echo "iq_quantize_speed.sh: $edgeq missing (cmake --build $build --target edgeq)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export EDGEQ_PROGRESS=0
imatrix=$shared/golden/tl-8m.imatrix
run() { "$@" > "$work/out" 2>&1 || { cat "$work/out" >&2; exit 1; }; }
now() { date +%s.%N; }

run "$edgeq" convert "$shared/models/tl-8m" --outtype f32 -o "$work/f32.gguf"
run "$lbin/llama-quantize" --imatrix "$imatrix" "$work/f32.gguf" "$work/llama.gguf" "$type" "$threads"
# llama-quantize's tensor types as overrides (one anchored pattern per quantized tensor).
mapfile -t overrides < <("$edgeq" inspect "$work/llama.gguf" --json | python3 -c '
import json, re, sys
for t in json.load(sys.stdin)["tensors"]:
    if t["type"] not in ("F32", "F16") or t["name"] == "output.weight":
        print("--tensor-type"); print("^" + re.escape(t["name"]) + "$=" + t["type"])')
best_l=1e9 best_e=1e9
for ((i = 0; i < runs; ++i)); do
  t0=$(now); run "$lbin/llama-quantize" --imatrix "$imatrix" "$work/f32.gguf" "$work/llama.gguf" "$type" "$threads"; t1=$(now)
  run "$edgeq" quantize "$work/f32.gguf" -o "$work/edgeq.gguf" --type Q2_K --pure --imatrix "$imatrix" --threads "$threads" \
    --no-edgeq-metadata "${overrides[@]}"
  t2=$(now)
  best_l=$(awk -v a="$best_l" -v b="$(awk -v x="$t0" -v y="$t1" 'BEGIN{print y-x}')" 'BEGIN{print (b<a)?b:a}')
  best_e=$(awk -v a="$best_e" -v b="$(awk -v x="$t1" -v y="$t2" 'BEGIN{print y-x}')" 'BEGIN{print (b<a)?b:a}')
done
printf "%-16s %8s %10s\n" tool "best s" "size"
printf "%-16s %8.3f %10s\n" llama-quantize "$best_l" "$(stat -c %s "$work/llama.gguf")"
printf "%-16s %8.3f %10s\n" "edgeq quantize" "$best_e" "$(stat -c %s "$work/edgeq.gguf")"
awk -v e="$best_e" -v l="$best_l" 'BEGIN { r = e / l; printf "time ratio edgeq/llama-quantize (%s, %d threads): %.3f (limit 1.10)\n", "'"$type"'", '"$threads"', r; exit !(r <= 1.10) }'
