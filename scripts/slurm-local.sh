#!/usr/bin/env bash
# A single-node Slurm on localhost, made from Debian's packages (slurm-wlm, munge) and files of its own:
#
#   scripts/slurm-local.sh start [--owner PID] [--max-seconds N]
#   scripts/slurm-local.sh status
#   scripts/slurm-local.sh stop
#
# Everything lives in one private run directory, $EDGEQ_SLURM_DIR (default /tmp/edgeq-slurm-$UID): a munge key
# generated there, slurm.conf, the controller's state, slurmd's spool, pid files and logs. Nothing in /etc is read
# or written. `start` starts munged, slurmctld and slurmd with those paths on free loopback ports, waits (at most
# $EDGEQ_SLURM_START_TIMEOUT s, default 30) until `sinfo` shows the node idle, and prints the line clients need:
#   export SLURM_CONF=<run dir>/slurm.conf
# `stop` cancels what is still queued, stops exactly the daemons it started (their pid files, each checked to be
# still the program it started) and removes the run directory (only one that `start` made: it carries a marker
# file; an existing directory of anything else is refused, never reused or removed). With --owner PID a watchdog runs `stop` when
# process PID ends; with --max-seconds N, at the latest N seconds after start (a test's safety net: no daemon
# outlives it). `status` prints the node's state and exits 0 when the node is up.
# Runs as root (SlurmUser=root), as CI does: Slurm's daemons need it to start jobs as their user.
set -euo pipefail

RUN=${EDGEQ_SLURM_DIR:-${TMPDIR:-/tmp}/edgeq-slurm-$(id -u)}
CONF=$RUN/slurm.conf
START_TIMEOUT=${EDGEQ_SLURM_START_TIMEOUT:-30}
STOP_TIMEOUT=10
MARK=.edgeq-slurm-local  # in every run directory this script made; it removes no other directory

die() { echo "slurm-local: $*" >&2; exit 1; }
note() { echo "slurm-local: $*" >&2; }

# The pid in FILE when that process is alive and is still PROG (a pid reused by another program is not ours).
live_pid() {
  local file=$1 prog=$2 pid
  [ -f "$file" ] || return 1
  pid=$(tr -dc '0-9' < "$file")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$prog" || return 1
  echo "$pid"
}

# Local TCP ports in use (listening or connected), from /proc: no extra tool.
used_ports() {
  local f _ local_addr _rest
  for f in /proc/net/tcp /proc/net/tcp6; do
    [ -r "$f" ] || continue
    while read -r _ local_addr _rest; do
      echo $((16#${local_addr##*:}))
    done < <(tail -n +2 "$f")
  done
  return 0
}

# Two consecutive free ports below Linux's ephemeral range (32768-60999, where outgoing connections take theirs),
# from a start that depends on the run directory (two runs rarely collide).
free_port_pair() {
  local used p
  used=" $(used_ports | sort -un | tr '\n' ' ') "
  p=$(( 20000 + $(printf '%s' "$RUN" | cksum | cut -d' ' -f1) % 6000 * 2 ))
  for _ in $(seq 1 3000); do
    if [[ $used != *" $p "* && $used != *" $((p + 1)) "* ]]; then echo "$p"; return 0; fi
    p=$(( p + 2 > 32766 ? 20000 : p + 2 ))
  done
  die "no two free TCP ports found in 20000-32767"
}

node_state() { SLURM_CONF=$CONF timeout 5 sinfo -h -n localhost -o %T 2>/dev/null | head -1; }

# SIGTERM to each daemon still running (NAME:PIDFILE:PROG ...), all at once; SIGKILL to any that outlives
# STOP_TIMEOUT seconds.
stop_daemons() {
  local spec name file prog pid pids=()
  for spec in "$@"; do
    IFS=: read -r name file prog <<<"$spec"
    pid=$(live_pid "$file" "$prog") || continue
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$name:$pid")
  done
  for _ in $(seq 1 $((STOP_TIMEOUT * 10))); do
    local alive=0
    for spec in "${pids[@]}"; do [ -d "/proc/${spec#*:}" ] && alive=1; done
    [ $alive -eq 0 ] && return 0
    sleep 0.1
  done
  for spec in "${pids[@]}"; do
    if [ -d "/proc/${spec#*:}" ]; then
      note "${spec%%:*} (pid ${spec#*:}) ignored SIGTERM for ${STOP_TIMEOUT} s: SIGKILL"
      kill -KILL "${spec#*:}" 2>/dev/null || true
    fi
  done
}

cmd_stop() {
  [ -d "$RUN" ] || { note "not running ($RUN does not exist)"; return 0; }
  [ -f "$RUN/$MARK" ] || die "$RUN is not a run directory of slurm-local.sh (no $MARK): not touching it"
  # the watchdog first, unless it is the one stopping (its whole process group: the loop and its sleep)
  local wd
  if [ -z "${EDGEQ_SLURM_WATCHDOG:-}" ] && wd=$(live_pid "$RUN/watchdog.pid" slurm-local.sh); then
    kill -TERM -- "-$wd" 2>/dev/null || kill -TERM "$wd" 2>/dev/null || true
  fi
  # jobs still queued or running: cancel them so that no job step (slurmstepd) outlives slurmd
  if live_pid "$RUN/slurmctld.pid" slurmctld >/dev/null; then
    local jobs
    jobs=$(SLURM_CONF=$CONF timeout 5 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ') || true
    if [ -n "${jobs// }" ]; then
      note "cancelling jobs still in the queue: $jobs"
      # shellcheck disable=SC2086
      SLURM_CONF=$CONF timeout 5 scancel $jobs 2>/dev/null || true
      for _ in $(seq 1 $((STOP_TIMEOUT * 10))); do
        [ -z "$(SLURM_CONF=$CONF timeout 5 squeue -h -o %A 2>/dev/null)" ] && break
        sleep 0.1
      done
    fi
  fi
  # job steps end with their jobs; wait (bounded) until no slurmstepd holds its socket in slurmd's spool
  # (named <node>_<job>.<step>)
  for _ in $(seq 1 $((STOP_TIMEOUT * 10))); do
    compgen -G "$RUN/spool/localhost_*" >/dev/null || break
    sleep 0.1
  done
  stop_daemons "slurmd:$RUN/slurmd.pid:slurmd" "slurmctld:$RUN/slurmctld.pid:slurmctld"
  stop_daemons "munged:$RUN/munged.pid:munged"  # last: the others authenticate through it until they end
  rm -rf -- "$RUN"
  note "stopped, $RUN removed"
}

start_failed() {
  note "start failed; the logs end:"
  tail -n 5 "$RUN"/log/* >&2 2>/dev/null || true
  cmd_stop
}

cmd_status() {
  local s
  [ -f "$CONF" ] || { echo "not running"; return 1; }
  s=$(node_state)
  echo "run directory $RUN: node localhost ${s:-unreachable}"
  echo "export SLURM_CONF=$CONF"
  [[ $s == idle* || $s == mixed* || $s == allocated* ]]
}

cmd_start() {
  local owner="" max_seconds=0
  while [ $# -gt 0 ]; do
    case $1 in
      --owner) owner=$2; shift 2 ;;
      --max-seconds) max_seconds=$2; shift 2 ;;
      *) die "start: unknown option $1" ;;
    esac
  done
  [ "$(id -u)" -eq 0 ] || die "needs root (SlurmUser=root; slurmd starts jobs as their user)"
  local p
  for p in munged slurmctld slurmd sinfo; do
    command -v "$p" >/dev/null || die "$p not found: install slurm-wlm and munge (scripts/setup.sh)"
  done
  if [ -e "$RUN" ]; then
    [ -f "$RUN/$MARK" ] || die "$RUN exists and is not a run directory of slurm-local.sh: set EDGEQ_SLURM_DIR to a new path"
    if live_pid "$RUN/slurmctld.pid" slurmctld >/dev/null || live_pid "$RUN/munged.pid" munged >/dev/null; then
      die "already running in $RUN (stop it first)"
    fi
    note "removing the stale run directory $RUN"
    rm -rf -- "$RUN"
  fi
  # munged wants its socket's directories searchable by everyone (clients of any user), its key private
  mkdir -p "$(dirname "$RUN")"
  mkdir "$RUN"  # a new directory: stop removes it whole
  chmod 711 "$RUN"
  echo "made by scripts/slurm-local.sh start; removed by stop" > "$RUN/$MARK"
  mkdir -p "$RUN/state" "$RUN/spool" "$RUN/log" "$RUN/munge" "$RUN/socket"
  chmod 700 "$RUN/state" "$RUN/spool" "$RUN/log" "$RUN/munge"
  chmod 711 "$RUN/socket"
  # from here on, a failure stops what was started
  trap 'start_failed' EXIT

  # munge: a fresh key, a socket of its own
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile="$RUN/munge/munge.key" --force
  else
    dd if=/dev/urandom of="$RUN/munge/munge.key" bs=1024 count=1 status=none
  fi
  chmod 600 "$RUN/munge/munge.key"
  # (each daemon's own output, before it detaches, goes to the log directory: a caller reading this script's
  # output through a pipe must not wait for the daemons)
  munged --key-file="$RUN/munge/munge.key" --socket="$RUN/socket/munge.socket" --pid-file="$RUN/munged.pid" \
    --log-file="$RUN/log/munged.log" --seed-file="$RUN/munge/munged.seed" </dev/null >>"$RUN/log/munged.out" 2>&1
  for _ in $(seq 1 50); do [ -S "$RUN/socket/munge.socket" ] && break; sleep 0.1; done
  [ -S "$RUN/socket/munge.socket" ] || die "munged did not create its socket (see $RUN/log/munged.log)"

  # slurm.conf: the machine's CPUs and memory as slurmd itself measures them
  local hw port
  hw=$(slurmd -C | head -1 | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' | tr '\n' ' ')
  [[ $hw == *CPUs=* ]] || die "slurmd -C did not report the CPUs"
  port=$(free_port_pair)
  cat > "$CONF" <<EOF
# written by scripts/slurm-local.sh: a single-node cluster on localhost, everything under $RUN
ClusterName=edgeq
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$RUN/socket/munge.socket
StateSaveLocation=$RUN/state
SlurmdSpoolDir=$RUN/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$RUN/log/slurmctld.log
SlurmdLogFile=$RUN/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
ReturnToService=2
MailProg=/bin/true
MinJobAge=300
MaxArraySize=100001
NodeName=localhost NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

  slurmctld -f "$CONF" </dev/null >>"$RUN/log/slurmctld.out" 2>&1
  slurmd -f "$CONF" -N localhost </dev/null >>"$RUN/log/slurmd.out" 2>&1

  # the watchdog: stops everything when the owner ends or the time is up
  if [ -n "$owner" ] || [ "$max_seconds" -gt 0 ]; then
    # shellcheck disable=SC2016  # the loop is expanded by the watchdog shell, not here
    EDGEQ_SLURM_WATCHDOG=1 EDGEQ_SLURM_DIR=$RUN setsid bash -c '
      owner=$1 max=$2 script=$3
      start=$SECONDS
      while { [ -z "$owner" ] || kill -0 "$owner" 2>/dev/null; } && { [ "$max" -le 0 ] || [ $((SECONDS - start)) -lt "$max" ]; }; do
        sleep 1
      done
      echo "watchdog: owner ${owner:-none} gone or ${max} s up: stopping" >&2
      exec bash "$script" stop' slurm-local.sh "$owner" "$max_seconds" "$(readlink -f "$0")" \
      </dev/null >>"$RUN/log/watchdog.log" 2>&1 &
    echo $! > "$RUN/watchdog.pid"
  fi

  local s="" t0=$SECONDS
  while [ $((SECONDS - t0)) -lt "$START_TIMEOUT" ]; do
    s=$(node_state || true)
    [[ $s == idle* ]] && break
    sleep 0.2
  done
  [[ $s == idle* ]] || die "node not idle after ${START_TIMEOUT} s (state: ${s:-none})"
  trap - EXIT
  note "up in $((SECONDS - t0)) s: node localhost idle, ports $port-$((port + 1)), run directory $RUN"
  echo "export SLURM_CONF=$CONF"
}

case ${1:-} in
  start) shift; cmd_start "$@" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start [--owner PID] [--max-seconds N] | status | stop" >&2; exit 2 ;;
esac
