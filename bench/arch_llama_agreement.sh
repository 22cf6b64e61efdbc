#!/usr/bin/env bash
# llama-perplexity on edgeq's own quantized files of the four architecture fixtures (issue 20): for gemma, gemma2,
# phi3 and mixtral (../shared/models/arch), `edgeq convert` to F16, `edgeq quantize` to Q8_0, Q4_K_M, Q3_K_M and
# Q2_K, then the PPL of each file from `edgeq perplexity` and from llama.cpp's llama-perplexity, both with n_ctx
# 256, 20 chunks of tinystories-heldout.txt (arch.json's protocol). Prints the 16-row table (markdown) and fails
# when a file's two PPLs differ by more than 0.05%. Skipped (exit 0) when LLAMA_CPP_BIN is unset.
#
#   bench/arch_llama_agreement.sh [BUILD_DIR]   env: LLAMA_CPP_BIN (llama.cpp's bin/ with llama-perplexity),
#                                              THREADS (2), CHUNKS (20)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
edgeq=$build/cli/edgeq
shared=$here/../shared
threads=${THREADS:-2}
chunks=${CHUNKS:-20}
lbin=${LLAMA_CPP_BIN:-}
[[ -n $lbin ]] || { echo "arch_llama_agreement.sh: LLAMA_CPP_BIN unset, skipped"; exit 0; }
[[ -x $lbin/llama-perplexity ]] || { echo "arch_llama_agreement.sh: $lbin/llama-perplexity missing" >&2; exit 1; }
[[ -x $edgeq ]] || { echo "arch_llama_agreement.sh: $edgeq missing (cmake --build $build --target edgeq)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export EDGEQ_PROGRESS=0
text=$shared/text/tinystories-heldout.txt
run() { "$@" > "$work/out" 2>&1 || { cat "$work/out" >&2; exit 1; }; }

echo "| model | type | edgeq PPL | llama-perplexity PPL | difference |"
echo "|---|---|---:|---:|---:|"
bad=0
for m in gemma gemma2 phi3 mixtral; do
  run "$edgeq" convert "$shared/models/arch/$m" --outtype f16 -o "$work/$m-F16.gguf"
  for t in Q8_0 Q4_K_M Q3_K_M Q2_K; do
    f=$work/$m-$t.gguf
    run "$edgeq" quantize "$work/$m-F16.gguf" -o "$f" --type "$t"
    ours=$("$edgeq" perplexity "$f" -f "$text" -c 256 --chunks "$chunks" -t "$threads" --json -q |
             python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["ppl"])')
    run "$lbin/llama-perplexity" -m "$f" -f "$text" -c 256 --chunks "$chunks" -t "$threads"
    theirs=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$work/out")
    [[ -n $theirs ]] || { echo "arch_llama_agreement.sh: no PPL from llama-perplexity on $f" >&2; cat "$work/out" >&2; exit 1; }
    read -r diff ok < <(python3 -c "a,b=$ours,$theirs; d=abs(a/b-1)*100; print('%.4f%%' % d, int(d <= 0.05))")
    echo "| $m | $t | $ours | $theirs | $diff |"
    [[ $ok == 1 ]] || bad=1
  done
done
[[ $bad == 0 ]] || { echo "arch_llama_agreement.sh: a file's PPL differs by more than 0.05%" >&2; exit 1; }
