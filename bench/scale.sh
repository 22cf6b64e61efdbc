#!/usr/bin/env bash
# shellcheck disable=SC2154  # measure (bench/scale_common.sh) sets its VAR with printf -v
# Speed at real model size: edgeq against llama.cpp on the same files, threads and text, in one run.
# Creates (once) a random-weight 0.74B Llama (../shared/golden/scale.json's shape; bench/fixture_llama) in a
# cache directory, converts it to F16 with edgeq, then times on both sides:
#   quantize F16 -> Q4_K_M (wall, peak RSS), perplexity --ctx 256 --chunks 4 (Q4_K_M and F16, whole process),
#   generation tokens/s on Q4_K_M (edgeq: (t(n=65) - t(n=1)) / 64; llama.cpp: llama-bench tg64).
# Ratios are llama.cpp time / edgeq time (> 1: edgeq faster). Not part of ctest (minutes, 1.4 GiB fixture).
# A baseline from the same run: edgeq perplexity with OPENBLAS_CORETYPE=Prescott, the kernels Debian's
# OpenBLAS 0.3.21 falls back to on CPUs it does not know (what edgeq got before it chose the core itself).
#
#   bench/scale.sh [BUILD_DIR]         env: LLAMA_CPP_BIN=dir with llama-perplexity, llama-quantize,
#                                       llama-bench (skipped if unset); THREADS (2); EDGEQ_FIXTURES
#                                       (~/.cache/edgeq); FIXTURE_ARGS (fixture_llama shape options)
# edgeq runs without OPENBLAS_CORETYPE (edgeq chooses OpenBLAS's kernels itself); llama.cpp runs as given.
set -euo pipefail
# shellcheck source=bench/scale_common.sh
source "$(dirname "$0")/scale_common.sh"
scale_init scale.sh "$(cd "$(dirname "$0")/.." && pwd)/../shared/text/tinystories-heldout.txt" "${1:-}"
log=$cache/$name.log  # every command's output
: > "$log"
E=(env -u OPENBLAS_CORETYPE "$edgeq")
make_fixture
echo "edgeq: $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?'), threads $threads, model $dir"

row() { printf "%-34s %12s %12s %8s\n" "$@"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2fx", a / b; else print "-" }'; }
row job edgeq llama.cpp ratio

# quantize F16 -> Q4_K_M
q4=$dir.Q4_K_M.gguf
measure eq "${E[@]}" quantize "$f16" -o "$q4" -t Q4_K_M --threads "$threads" --no-edgeq-metadata
lq="- -"
if [[ -n $lbin ]]; then
  measure lq "$lbin/llama-quantize" "$f16" "$dir.llama.Q4_K_M.gguf" Q4_K_M "$threads"
  rm -f "$dir.llama.Q4_K_M.gguf"
fi
row "quantize F16->Q4_K_M (s)" "${eq% *}" "${lq% *}" "$(ratio "${lq% *}" "${eq% *}")"
row "quantize peak RSS (MiB)" "${eq#* }" "${lq#* }" ""

# perplexity, whole process
for m in Q4_K_M F16; do
  f=$dir.$m.gguf
  measure ep "${E[@]}" perplexity "$f" -f "$text" --ctx 256 --chunks 4 -t "$threads"
  lp="- -"
  # llama-perplexity's own batching (n_batch 2048: the 4 chunks side by side, as edgeq does)
  [[ -n $lbin ]] && measure lp "$lbin/llama-perplexity" -m "$f" -f "$text" -c 256 --chunks 4 -t "$threads"
  row "perplexity $m ctx256x4 (s)" "${ep% *}" "${lp% *}" "$(ratio "${lp% *}" "${ep% *}")"
  measure bp env OPENBLAS_CORETYPE=Prescott "$edgeq" perplexity "$f" -f "$text" --ctx 256 --chunks 4 -t "$threads"
  row "  baseline: edgeq, Prescott BLAS" "${bp% *}" "" "$(ratio "${bp% *}" "${ep% *}")"
done

# generation, batch 1, Q4_K_M
measure g1 "${E[@]}" generate "$q4" -p "Once upon a time" -n 1 --ignore-eos -t "$threads"
measure g65 "${E[@]}" generate "$q4" -p "Once upon a time" -n 65 --ignore-eos -t "$threads"
etg=$(awk -v a="${g1% *}" -v b="${g65% *}" 'BEGIN { if (b > a) printf "%.2f", 64 / (b - a); else print "-" }')
ltg="-"
if [[ -n $lbin ]]; then
  ltg=$("$lbin/llama-bench" -m "$q4" -p 0 -n 64 -t "$threads" -o csv 2>>"$log" | tail -1 | awk -F, '{gsub(/"/, "", $0); print $(NF-1)}')
fi
row "generate Q4_K_M (tokens/s)" "$etg" "$ltg" "$(ratio "$etg" "$ltg")"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)   (log: $log)"
