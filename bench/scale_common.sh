# shellcheck shell=bash disable=SC2034,SC2154  # sets variables for its callers; they set log
# Sourced by bench/scale.sh and bench/calibrate_scale.sh: the random-weight 0.74B Llama fixture they share and
# the timing helper. scale_init NAME TEXT BUILD_DIR sets here, build, edgeq, threads, cache, shape, dir, f16
# and lbin, and checks the binaries and the text; measure VAR cmd... runs cmd with its output appended to $log
# and sets VAR to "seconds peak_MiB" (/usr/bin/time); make_fixture writes the fixture and its F16 conversion
# once (E: the edgeq command line to convert with).

scale_init() {
  me=$1
  text=$2
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  build=${3:-$here/build}
  edgeq=$build/cli/edgeq
  fixture=$build/bench/fixture_llama
  threads=${THREADS:-2}
  cache=${EDGEQ_FIXTURES:-$HOME/.cache/edgeq}
  shape=${FIXTURE_ARGS:-}
  name=llama-rand-$(echo "default $shape" | md5sum | cut -c1-8)  # one fixture per shape
  dir=$cache/$name
  f16=$dir.F16.gguf
  lbin=${LLAMA_CPP_BIN:-}
  local b
  for b in "$edgeq" "$fixture"; do
    [[ -x $b ]] || { echo "$me: $b missing (cmake --build $build --target edgeq fixture_llama)" >&2; exit 1; }
  done
  [[ -f $text ]] || { echo "$me: $text missing" >&2; exit 1; }
  mkdir -p "$cache"
}

measure() {  # measure VAR cmd...
  local var=$1 tf s kb
  shift
  tf=$(mktemp)
  /usr/bin/time -f "%e %M" -o "$tf" "$@" >> "$log" 2>&1 || { echo "$me: failed: $* (see $log)" >&2; tail -5 "$log" >&2; rm -f "$tf"; exit 1; }
  read -r s kb < <(tail -1 "$tf")
  rm -f "$tf"
  printf -v "$var" "%s %s" "$s" "$((kb / 1024))"
}

make_fixture() {
  if [[ ! -f $dir/config.json ]]; then
    echo "creating the fixture in $dir ..."
    # shellcheck disable=SC2086
    "$fixture" "$dir" $shape
  fi
  [[ -f $f16 ]] || "${E[@]}" convert "$dir" -o "$f16" --outtype f16 >> "$log" 2>&1
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
}
