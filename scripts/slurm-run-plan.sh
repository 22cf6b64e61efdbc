#!/usr/bin/env bash
# Runs a plan on Slurm: one `sbatch --array=0-(N-1)` job whose task i runs line i+1 of the plan
# (scripts/plan-line.sh: a shell command, or a JSON line of `edgeq compare --plan`), waits until the array has
# ended, names every task that failed with its logs, and when all succeeded runs the merge command here.
#
#   scripts/slurm-run-plan.sh PLAN_FILE [--merge 'COMMAND'] [--first-alone] [--logs DIR] [--max-wait SECONDS]
#                             [sbatch options...]
#
#   --merge CMD     run by bash in the current directory once every task succeeded
#   --first-alone   line 1 runs first, as its own job, and the others only after it succeeded (a compare plan:
#                   the first entry makes the shared reference in DIR/work that the others then reuse)
#   --logs DIR      where each task's stdout, stderr and exit status go (default PLAN_FILE.logs); a run writes
#                   DIR/<run>/task-<i>.{out,err,rc}; must be on a disk the compute nodes share, like the plan
#   --max-wait S    give up (scancel the jobs) after S seconds (default $EDGEQ_SLURM_MAX_WAIT or 86400)
#   --throttle N    at most N tasks at once (sbatch's --array=...%N)
#   anything else   passed to sbatch after this script's own options (so it wins), e.g. --partition,
#                   --cpus-per-task, --time, --mem (not --array: the array is the plan's lines)
# Tasks run from the current directory (sbatch's default), as the plan's lines would run here.
# Exit status: 0 when every task and the merge succeeded, 1 otherwise.
set -euo pipefail

die() { echo "slurm-run-plan: $*" >&2; exit 1; }
note() { echo "slurm-run-plan: $*" >&2; }

[ $# -ge 1 ] || die "usage: $0 PLAN_FILE [--merge 'COMMAND'] [--first-alone] [--logs DIR] [--max-wait S] [--throttle N] [sbatch options]"
plan=$(readlink -f -- "$1") || die "no plan file $1"
shift
merge="" first_alone=0 logs="" max_wait=${EDGEQ_SLURM_MAX_WAIT:-86400} throttle="" sbatch_opts=()
while [ $# -gt 0 ]; do
  case $1 in
    --merge) [ $# -ge 2 ] || die "--merge needs a command"; merge=$2; shift 2 ;;
    --first-alone) first_alone=1; shift ;;
    --logs) [ $# -ge 2 ] || die "--logs needs a directory"; logs=$2; shift 2 ;;
    --max-wait) [ $# -ge 2 ] || die "--max-wait needs seconds"; max_wait=$2; shift 2 ;;
    --throttle) [ $# -ge 2 ] || die "--throttle needs a number"; throttle=$2; shift 2 ;;
    --array|--array=*|-a) die "the array is the plan's lines; use --throttle N to limit tasks at once" ;;
    *) sbatch_opts+=("$1"); shift ;;
  esac
done
[[ $max_wait =~ ^[0-9]+$ ]] || die "--max-wait must be whole seconds, not '$max_wait'"
[ -z "$throttle" ] || [[ $throttle =~ ^[1-9][0-9]*$ ]] || die "--throttle must be a positive number, not '$throttle'"
[ -r "$plan" ] || die "cannot read the plan $plan"
command -v sbatch >/dev/null || die "sbatch not found (Slurm's client tools; scripts/setup.sh installs slurm-wlm)"

n=$(grep -c '' "$plan" || true)
[ "$n" -gt 0 ] || die "$plan is empty"
blank=$(grep -n -v '[^[:space:]]' "$plan" | head -1 | cut -d: -f1 || true)
[ -z "$blank" ] || die "$plan: line $blank is empty (one job per line, no blank lines)"

here=$(dirname -- "$(readlink -f -- "$0")")
run_id=$(date -u +%Y%m%dT%H%M%SZ)-$$
logs=$(readlink -m -- "${logs:-$plan.logs}")/$run_id
mkdir -p -- "$logs"

# The batch script: runs its task's line and records the exit status beside the logs (a task with no
# .rc file never finished: cancelled, out of time, node lost).
batch=$logs/task.sbatch
cat > "$batch" <<EOF
#!/bin/bash
# written by scripts/slurm-run-plan.sh for $plan
i=\$SLURM_ARRAY_TASK_ID
bash $(printf '%q' "$here/plan-line.sh") $(printf '%q' "$plan") "\$i"
rc=\$?
echo "\$rc" > $(printf '%q' "$logs")/task-\$i.rc
exit \$rc
EOF

submit() {  # ARRAY_RANGE [extra sbatch options]: prints the job id
  local range=$1 out
  shift
  out=$(sbatch --parsable --job-name=edgeq-plan --output="$logs/task-%a.out" --error="$logs/task-%a.err" \
    --array="$range${throttle:+%$throttle}" "$@" "${sbatch_opts[@]}" "$batch") || die "sbatch refused the job (options: ${sbatch_opts[*]:-none})"
  echo "${out%%;*}"
}

if [ "$first_alone" -eq 1 ] && [ "$n" -gt 1 ]; then
  first=$(submit 0) || exit 1
  rest=$(submit "1-$((n - 1))" --dependency=afterok:"$first" --kill-on-invalid-dep=yes) || { scancel "$first"; exit 1; }
  jobs=("$first" "$rest")
else
  all=$(submit "0-$((n - 1))") || exit 1
  jobs=("$all")
fi
note "$n tasks of $plan submitted as job ${jobs[*]}; logs in $logs"
# Interrupted (Ctrl-C, SIGTERM): the jobs go too.
trap 'note "interrupted: cancelling job ${jobs[*]}"; scancel "${jobs[@]}" 2>/dev/null; exit 130' INT TERM

# Wait until no task of ours is pending or running.
ids=$(IFS=,; echo "${jobs[*]}")
t0=$SECONDS
last_report=$SECONDS
delay=0.2
cancelled=0
while :; do
  if q=$(squeue -h -j "$ids" -o %i 2>"$logs/squeue.err"); then
    [ -z "$q" ] && break
  elif grep -q "Invalid job id" "$logs/squeue.err"; then
    break  # the controller has forgotten the jobs: they ended more than MinJobAge ago
  else
    q="squeue failed: $(head -1 "$logs/squeue.err")"  # the controller is unreachable: keep trying
  fi
  if [ $((SECONDS - t0)) -ge "$max_wait" ]; then
    note "still running after $max_wait s: cancelling job ${jobs[*]}"
    scancel "${jobs[@]}" 2>/dev/null || true
    cancelled=1
    break
  fi
  if [ $((SECONDS - last_report)) -ge 60 ]; then
    note "waiting after $((SECONDS - t0)) s: $(wc -l <<<"$q") tasks pending or running ($(head -1 <<<"$q"), ...)"
    last_report=$SECONDS
  fi
  sleep "$delay"
  # poll quickly at first (short plans), then every 5 s
  [ $((SECONDS - t0)) -lt 30 ] || delay=5
done

trap - INT TERM

# A status file written on another node can take a moment to show here (NFS caches lookups): wait a little
# (EDGEQ_SLURM_RC_GRACE s, default 10) for those of tasks that started (their log exists) unless the jobs were
# cancelled.
missing_rc() {
  for i in $(seq 0 $((n - 1))); do
    [ -f "$logs/task-$i.rc" ] || [ ! -e "$logs/task-$i.err" ] || return 0
  done
  return 1
}
if [ "$cancelled" -eq 0 ]; then
  for _ in $(seq 1 "${EDGEQ_SLURM_RC_GRACE:-10}"); do
    missing_rc || break
    ls "$logs" >/dev/null 2>&1 || true  # a fresh directory read
    sleep 1
  done
fi

failed=0
for i in $(seq 0 $((n - 1))); do
  rcf=$logs/task-$i.rc
  if [ ! -f "$rcf" ]; then
    note "task $i (line $((i + 1))) did not finish (cancelled, timed out, or its dependency failed): $logs/task-$i.out, $logs/task-$i.err"
    failed=$((failed + 1))
  elif [ "$(cat "$rcf")" != 0 ]; then
    note "task $i (line $((i + 1))) failed with exit status $(cat "$rcf"): $logs/task-$i.out, $logs/task-$i.err; its last lines:"
    tail -n 5 "$logs/task-$i.err" 2>/dev/null | sed 's/^/    /' >&2 || true
    failed=$((failed + 1))
  fi
done
[ "$failed" -eq 0 ] || die "$failed of $n tasks failed; no merge"
note "all $n tasks succeeded in $((SECONDS - t0)) s"

if [ -n "$merge" ]; then
  note "merging: $merge"
  bash -c "$merge" || die "the merge command failed: $merge"
fi
