#!/usr/bin/env bash
# shellcheck disable=SC2154  # measure (bench/scale_common.sh) sets its VAR with printf -v
# Calibration at real model size: on bench/scale.sh's random-weight 0.74B Llama (the same cached fixture and
# F16 conversion; created once if missing), wall time and peak RSS (/usr/bin/time) of
#   edgeq calibrate            (imatrix only, .dat)            -> calibration tokens/s
#   edgeq calibrate --hessian  (GGUF statistics, streamed per layer)
#   edgeq quantize -t Q4_K_M   --method rtn | awq | gptq (--calib the statistics)
# and llama-imatrix on the same file, text and chunks when LLAMA_CPP_BIN is set (skipped otherwise). Peak
# memory should stay at the model's mapping plus one layer's statistics: with 16 layers of hidden 2048 / ffn
# 5632 one layer's Hessians (all chunks + odd chunks, double) are ~0.7 GiB, the whole model's ~11 GiB.
# The weights are random, so only times and memory mean anything. Not part of ctest (minutes, GiBs on disk).
#
#   bench/calibrate_scale.sh [BUILD_DIR]   env: LLAMA_CPP_BIN, THREADS (2), CHUNKS (8, of 256 tokens),
#                                            EDGEQ_FIXTURES (~/.cache/edgeq), FIXTURE_ARGS (as scale.sh),
#                                            STEPS (default "imatrix llama hessian rtn awq gptq"; awq and
#                                            gptq need hessian)
set -euo pipefail
# shellcheck source=bench/scale_common.sh
source "$(dirname "$0")/scale_common.sh"
scale_init calibrate_scale.sh "$(cd "$(dirname "$0")/.." && pwd)/../shared/text/calib.txt" "${1:-}"
chunks=${CHUNKS:-8}
steps=" ${STEPS:-imatrix llama hessian rtn awq gptq} "
step() { [[ $steps == *" $1 "* ]]; }
work=$(mktemp -d "$cache/calibrate-scale.XXXXXX")
trap 'rm -rf "$work"' EXIT
log=$work/log
E=(env -u OPENBLAS_CORETYPE EDGEQ_PROGRESS=0 "$edgeq")
make_fixture
echo "edgeq: $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?'), threads $threads, $chunks chunks of 256 of calib.txt, model $f16 ($(($(stat -c %s "$f16") >> 20)) MiB)"
row() { printf "%-40s %10s %14s %12s\n" "$@"; }
tps() { awk -v s="$1" -v n="$((chunks * 256))" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "-" }'; }
row job "wall (s)" "peak RSS (MiB)" "tokens/s"

if step imatrix; then
  measure c "${E[@]}" calibrate "$f16" --data "$text" --ctx 256 --chunks "$chunks" -t "$threads" -o "$work/imatrix.dat"
  row "edgeq calibrate (imatrix)" "${c% *}" "${c#* }" "$(tps "${c% *}")"
fi
if [[ -n $lbin ]] && step llama; then
  measure l "$lbin/llama-imatrix" -m "$f16" -f "$text" -c 256 --chunks "$chunks" -t "$threads" --no-ppl -o "$work/llama.dat"
  row "llama-imatrix" "${l% *}" "${l#* }" "$(tps "${l% *}")"
  measure l "env" OMP_WAIT_POLICY=PASSIVE "$lbin/llama-imatrix" -m "$f16" -f "$text" -c 256 --chunks "$chunks" -t "$threads" --no-ppl -o "$work/llama.dat"
  row "llama-imatrix, OMP_WAIT_POLICY=PASSIVE" "${l% *}" "${l#* }" "$(tps "${l% *}")"
fi
stats=$work/stats.gguf
if step hessian; then
  measure h "${E[@]}" calibrate "$f16" --data "$text" --ctx 256 --chunks "$chunks" -t "$threads" --hessian -o "$stats"
  row "edgeq calibrate --hessian" "${h% *}" "${h#* }" "$(tps "${h% *}")"
  echo "  statistics file: $(($(stat -c %s "$stats") >> 20)) MiB"
fi
for m in rtn awq gptq; do
  step $m || continue
  extra=()
  [[ $m != rtn ]] && extra=(--calib "$stats")
  measure q "${E[@]}" quantize "$f16" -o "$work/q.gguf" -t Q4_K_M --threads "$threads" --method "$m" "${extra[@]}" --no-edgeq-metadata
  row "edgeq quantize Q4_K_M --method $m" "${q% *}" "${q#* }" ""
  rm -f "$work/q.gguf"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
