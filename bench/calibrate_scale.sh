#!/usr/bin/env bash
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
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
edgeq=$build/cli/edgeq
fixture=$build/bench/fixture_llama
threads=${THREADS:-2}
chunks=${CHUNKS:-8}
cache=${EDGEQ_FIXTURES:-$HOME/.cache/edgeq}
text=$here/../shared/text/calib.txt
shape=${FIXTURE_ARGS:-}
name=llama-rand-$(echo "default $shape" | md5sum | cut -c1-8)  # scale.sh's name: the same fixture
dir=$cache/$name
for b in "$edgeq" "$fixture"; do [[ -x $b ]] || { echo "calibrate_scale.sh: $b missing (cmake --build $build --target edgeq fixture_llama)" >&2; exit 1; }; done
[[ -f $text ]] || { echo "calibrate_scale.sh: $text missing" >&2; exit 1; }
lbin=${LLAMA_CPP_BIN:-}
steps=" ${STEPS:-imatrix llama hessian rtn awq gptq} "
step() { [[ $steps == *" $1 "* ]]; }
mkdir -p "$cache"
work=$(mktemp -d "$cache/calibrate-scale.XXXXXX")
trap 'rm -rf "$work"' EXIT
log=$work/log

measure() {  # measure VAR cmd...   -> "seconds peak_MiB"
  local var=$1; shift
  local tf=$work/time
  /usr/bin/time -f "%e %M" -o "$tf" "$@" >> "$log" 2>&1 || { echo "calibrate_scale.sh: failed: $*" >&2; tail -5 "$log" >&2; exit 1; }
  read -r s kb < <(tail -1 "$tf")
  printf -v "$var" "%s %s" "$s" "$((kb / 1024))"
}
E=(env -u OPENBLAS_CORETYPE EDGEQ_PROGRESS=0 "$edgeq")

if [[ ! -f $dir/config.json ]]; then
  echo "creating the fixture in $dir ..."
  # shellcheck disable=SC2086
  "$fixture" "$dir" $shape
fi
f16=$dir.F16.gguf
[[ -f $f16 ]] || "${E[@]}" convert "$dir" -o "$f16" --outtype f16 >> "$log" 2>&1

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
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
