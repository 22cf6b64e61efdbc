#!/usr/bin/env bash
# The cost of a budget search against one `edgeq quantize --method auto` (issue 22: at most 3x), on tl-8m with
# calib.txt, run back to back in one script so both see the same machine load:
#   1. edgeq quantize tl-8m --type Q4_K_M --method auto --data calib.txt          (calibration + auto's choice)
#   2. edgeq quantize tl-8m --target-size SIZE --data calib.txt (gptq, every default type) with an empty cache:
#      calibration, every sensitivity job, the solve and the write
#   3. the same with another SIZE: the cache makes it a solve and a write
# then the mean KLD of the budget files on the held-out text (120 chunks, n_ctx 256, against the F32 conversion,
# llama-perplexity's protocol) when KLD=1. Not part of ctest (minutes).
#
#   bench/budget_cost.sh [BUILD_DIR]   env: THREADS (2), CHUNKS (--budget-chunks, 2), SIZES (Q2_K, Q3_K_M and
#                                      Q4_K_M imatrix golden sizes), KLD (1)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
edgeq=$build/cli/edgeq
shared=$here/../shared
threads=${THREADS:-2}
chunks=${CHUNKS:-2}
sizes=${SIZES:-"3620544 4447936 5337792"}
work=$(mktemp -d "${TMPDIR:-/tmp}/budget-cost.XXXXXX")
trap 'rm -rf "$work"' EXIT
E=(env EDGEQ_PROGRESS=0 "$edgeq")
model=$shared/models/tl-8m
calib=$shared/text/calib.txt
secs() { local t0=$SECONDS; "$@" > "$work/out" 2>&1 || { cat "$work/out"; exit 1; }; echo $((SECONDS - t0)); }
echo "edgeq $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?'), threads $threads, budget chunks $chunks, load $(cut -d' ' -f1-3 /proc/loadavg)"
t_auto=$(secs "${E[@]}" quantize "$model" -o "$work/auto.gguf" --type Q4_K_M --method auto --data "$calib" --threads "$threads")
echo "auto quantize (Q4_K_M):           ${t_auto} s"
first=1
for s in $sizes; do
  t=$(secs "${E[@]}" quantize "$model" -o "$work/budget-$s.gguf" --target-size "$s" --data "$calib" --method gptq \
        --budget-chunks "$chunks" --cache "$work/cache" --threads "$threads" --no-edgeq-metadata --json)
  pred=$(python3 -c "import json,sys; j=json.load(open('$work/out')); print(j['predicted_kld'], j['file_size'], j['jobs_run'])")
  if [[ $first == 1 ]]; then
    echo "budget search, empty cache ($s): ${t} s = $(python3 -c "print(round($t/max($t_auto,1),2))") x auto  [predicted KLD, size, jobs run: $pred]"
    first=0
  else
    echo "budget from the cache ($s):       ${t} s  [predicted KLD, size, jobs run: $pred]"
  fi
  if [[ ${KLD:-1} == 1 ]]; then
    [[ -f $work/base.kld ]] || "${E[@]}" convert "$model" -o "$work/ref.gguf" --outtype f32 > /dev/null
    [[ -f $work/base.kld ]] || "${E[@]}" perplexity "$work/ref.gguf" -f "$shared/text/tinystories-heldout.txt" --ctx 256 \
                                 --kld-base "$work/base.kld" --threads "$threads" > /dev/null
    "${E[@]}" perplexity "$work/budget-$s.gguf" -f "$shared/text/tinystories-heldout.txt" --ctx 256 --kld "$work/base.kld" \
      --threads "$threads" 2>&1 | grep -E "Mean +KLD" | sed "s/^/  held-out /"
  fi
done
