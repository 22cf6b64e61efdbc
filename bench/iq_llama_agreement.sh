#!/usr/bin/env bash
# llama.cpp loads every low-bit mix edgeq writes and agrees with edgeq's perplexity: for each of the 11 mixes
# (IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S IQ2_M IQ3_XXS IQ3_XS IQ3_S IQ3_M Q2_K_S) `edgeq quantize` of tl-8m's F32
# conversion with the golden imatrix (../shared/golden/tl-8m.imatrix), then `edgeq perplexity` and
# `llama-perplexity` on the first CHUNKS chunks of tinystories-heldout.txt (n_ctx 256). Prints one line per mix
# (both PPLs and their relative difference) and fails when llama-perplexity cannot load a file or the PPLs differ
# by more than 0.05%. Skipped (exit 0) when LLAMA_CPP_BIN is unset.
#
#   bench/iq_llama_agreement.sh [BUILD_DIR]   env: LLAMA_CPP_BIN (llama.cpp's bin/ with llama-perplexity),
#                                             THREADS (2), CHUNKS (8; 120 = the whole text), TYPES (all 11)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
edgeq=$build/cli/edgeq
shared=$here/../shared
threads=${THREADS:-2}
chunks=${CHUNKS:-8}
types=${TYPES:-IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S IQ2_M IQ3_XXS IQ3_XS IQ3_S IQ3_M Q2_K_S}
lbin=${LLAMA_CPP_BIN:-}
[[ -n $lbin ]] || { echo "iq_llama_agreement.sh: LLAMA_CPP_BIN unset, skipped"; exit 0; }
[[ -x $edgeq ]] || { echo "iq_llama_agreement.sh: $edgeq missing (cmake --build $build --target edgeq)" >&2; exit 1; }
[[ -x $lbin/llama-perplexity ]] || { echo "iq_llama_agreement.sh: $lbin/llama-perplexity missing" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export EDGEQ_PROGRESS=0
text=$shared/text/tinystories-heldout.txt
run() { "$@" > "$work/out" 2>&1 || { cat "$work/out" >&2; exit 1; }; }

run "$edgeq" convert "$shared/models/tl-8m" --outtype f32 -o "$work/f32.gguf"
fail=0
for t in $types; do
  f=$work/$t.gguf
  run "$edgeq" quantize "$work/f32.gguf" -o "$f" --type "$t" --imatrix "$shared/golden/tl-8m.imatrix" \
    --threads "$threads" --no-edgeq-metadata
  e=$("$edgeq" perplexity "$f" -f "$text" -c 256 --chunks "$chunks" -t "$threads" --json 2>/dev/null |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["ppl"])')
  if ! "$lbin/llama-perplexity" -m "$f" -f "$text" -c 256 --chunks "$chunks" -t "$threads" > "$work/l.txt" 2>&1; then
    echo "$t: llama-perplexity failed on edgeq's file:"; tail -5 "$work/l.txt"; fail=1; continue
  fi
  l=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$work/l.txt")
  [[ -n $l ]] || { echo "$t: no PPL in llama-perplexity's output"; tail -5 "$work/l.txt"; fail=1; continue; }
  python3 - "$t" "$e" "$l" <<'PY' || fail=1
import sys
t, e, l = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
d = (e / l - 1) * 100
print(f"{t:8s} edgeq {e:.4f}  llama.cpp {l:.4f}  {d:+.4f}%{'' if abs(d) <= 0.05 else '  FAIL (> 0.05%)'}")
sys.exit(0 if abs(d) <= 0.05 else 1)
PY
done
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p')"
exit $fail
