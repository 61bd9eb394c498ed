#!/usr/bin/env bash
# Runs N copies of a command on this machine as one multi-process JAX job.
#
# Each copy gets the CJ_* variables that contrastive_jax.distributed.initialize()
# reads, so the copies find each other through a coordinator on 127.0.0.1. This is
# how multi-host code paths (process-local data, cross-process collectives,
# checkpoints written by several processes) are exercised without a cluster.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/local_multiprocess.sh [options] -- COMMAND [ARGS...]

Starts --processes copies of COMMAND on localhost as one multi-process JAX job,
waits for all of them, and stops the others as soon as one fails. With
--restart-on-75 N, a job that ends with status 75 (contrastive_jax.main saved a
checkpoint after a SIGTERM and asks to be rerun) is started again, at most N times.

Options:
  -n, --processes N           number of processes (default 2)
  -d, --devices-per-process D fake CPU devices per process
                              (XLA_FLAGS=--xla_force_host_platform_device_count=D,
                              JAX_PLATFORMS=cpu); without it each process sees the
                              machine's real devices
      --port PORT             coordinator port (default: a free port)
      --cpu-collectives IMPL  gloo (default), mpi, or none
      --logdir DIR            per-process logs (default: WORKDIR/logs when COMMAND
                              has --workdir=WORKDIR, else runs/local_multiprocess/logs)
      --timeout SECONDS       stop everything after this long, exit 124 (default 0: none)
      --grace SECONDS         after a failure, timeout or Ctrl-C: SIGTERM, then SIGKILL
                              this long later (default 10); after an exit 75 the
                              others get this long to exit on their own first
      --restart-on-75 N       rerun every process when the job exits 75, at most N
                              times (default 0: never); the command (and so its
                              --workdir) is unchanged, so each run resumes
      --dry-run               print the commands instead of running them
  -h, --help                  show this help

Environment given to process i:
  CJ_COORDINATOR_ADDRESS=127.0.0.1:PORT CJ_NUM_PROCESSES=N CJ_PROCESS_ID=i
  CJ_CPU_COLLECTIVES=IMPL PYTHONUNBUFFERED=1 [XLA_FLAGS=... JAX_PLATFORMS=cpu]

Output: process i writes to LOGDIR/process_i.log and is echoed here prefixed "[process i]".

Example:
  launch/local_multiprocess.sh --processes 2 --devices-per-process 4 -- \
    python -m contrastive_jax.main --config=configs/simclr.py --workdir=runs/mh
EOF
}

die() {
  echo "local_multiprocess.sh: $*" >&2
  exit 2
}

processes=2
devices=""
port=""
collectives="gloo"
logdir=""
timeout_s=0
grace_s=10
restarts=0
dry_run=0

while (($# > 0)); do
  case "$1" in
    -n | --processes) processes="${2:?$1 needs a value}"; shift 2 ;;
    --processes=*) processes="${1#*=}"; shift ;;
    -d | --devices-per-process) devices="${2:?$1 needs a value}"; shift 2 ;;
    --devices-per-process=*) devices="${1#*=}"; shift ;;
    --port) port="${2:?$1 needs a value}"; shift 2 ;;
    --port=*) port="${1#*=}"; shift ;;
    --cpu-collectives) collectives="${2:?$1 needs a value}"; shift 2 ;;
    --cpu-collectives=*) collectives="${1#*=}"; shift ;;
    --logdir) logdir="${2:?$1 needs a value}"; shift 2 ;;
    --logdir=*) logdir="${1#*=}"; shift ;;
    --timeout) timeout_s="${2:?$1 needs a value}"; shift 2 ;;
    --timeout=*) timeout_s="${1#*=}"; shift ;;
    --grace) grace_s="${2:?$1 needs a value}"; shift 2 ;;
    --grace=*) grace_s="${1#*=}"; shift ;;
    --restart-on-75) restarts="${2:?$1 needs a value}"; shift 2 ;;
    --restart-on-75=*) restarts="${1#*=}"; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (the command goes after --; see --help)" ;;
  esac
done
(($# > 0)) || die "no command given; put it after --"
cmd=("$@")

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_pos() { [[ "$1" =~ ^[0-9]+$ ]] && (($1 >= 1)); }
is_pos "$processes" || die "--processes must be a positive integer"
[[ -z "$devices" ]] || is_pos "$devices" || die "--devices-per-process must be a positive integer"
is_uint "$timeout_s" || die "--timeout must be a whole number of seconds"
is_uint "$grace_s" || die "--grace must be a whole number of seconds"
is_uint "$restarts" || die "--restart-on-75 must be a whole number of restarts (0: never)"
case "$collectives" in
  gloo | mpi | none) ;;
  *) die "--cpu-collectives must be gloo, mpi or none" ;;
esac

# Asks the kernel for a free port; a fixed default would collide between concurrent
# runs (e.g. two test sessions on one machine).
free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
  else
    echo $((20000 + RANDOM % 20000))
  fi
}
fixed_port="$port"
[[ -n "$port" ]] || port="$(free_port)"
if ! is_pos "$port" || ((port > 65535)); then die "--port must be in 1..65535"; fi

if [[ -z "$logdir" ]]; then
  workdir=""
  for ((k = 0; k < ${#cmd[@]}; k++)); do
    case "${cmd[k]}" in
      --workdir=*) workdir="${cmd[k]#--workdir=}" ;;
      --workdir) workdir="${cmd[k + 1]:-}" ;;
    esac
  done
  logdir="${workdir:-runs/local_multiprocess}/logs"
fi

export CJ_NUM_PROCESSES="$processes"
# Python block-buffers stdout into a pipe; the logs should stream.
export PYTHONUNBUFFERED=1
env_desc=(CJ_COORDINATOR_ADDRESS="127.0.0.1:${port}" CJ_NUM_PROCESSES="$processes")
if [[ "$collectives" != none ]]; then
  export CJ_CPU_COLLECTIVES="$collectives"
  env_desc+=(CJ_CPU_COLLECTIVES="$collectives")
fi
if [[ -n "$devices" ]]; then
  # Drop any inherited device-count flag (the test conftest sets 8) so ours is the one seen.
  kept=()
  read -ra inherited <<<"${XLA_FLAGS:-}"
  for flag in "${inherited[@]}"; do
    [[ "$flag" == --xla_force_host_platform_device_count=* ]] || kept+=("$flag")
  done
  kept+=("--xla_force_host_platform_device_count=${devices}")
  export XLA_FLAGS="${kept[*]}"
  # Fake devices exist only on the CPU backend; without this a GPU host would use its GPUs.
  export JAX_PLATFORMS=cpu
  env_desc+=(XLA_FLAGS="$XLA_FLAGS" JAX_PLATFORMS=cpu)
fi
env_desc+=(PYTHONUNBUFFERED=1)

# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if ((dry_run)); then
  show mkdir -p "$logdir"
  echo
  for ((i = 0; i < processes; i++)); do
    show "${env_desc[@]}" CJ_PROCESS_ID="$i" "${cmd[@]}"
    printf ' > %s 2>&1 &\n' "$(show "${logdir}/process_${i}.log")"
  done
  echo "wait  # all ${processes}; the first failure stops the rest"
  if ((restarts > 0)); then
    echo "# on exit 75: the same ${processes} commands again, at most ${restarts} times" \
      "(a new free coordinator port each time unless --port)"
  fi
  exit 0
fi

mkdir -p "$logdir"
# Fresh logs for this command; restarts below append to them.
for ((i = 0; i < processes; i++)); do : >"${logdir}/process_${i}.log"; done

pids=()  # one per process: its subshell, which leads the process group of its tree
alive() { kill -0 -- "-$1" 2>/dev/null; }
stop_all() {
  local sig="$1" pid
  for pid in "${pids[@]+"${pids[@]}"}"; do
    # Each process tree has its own process group (set -m below), so this reaches
    # the command and its tee/awk, and nothing else.
    kill "-${sig}" -- "-${pid}" 2>/dev/null || true
  done
}
# SIGTERM first: JAX treats it as a preemption notice, which a train loop may use to
# checkpoint. JAX also catches it, so a process can outlive it; SIGKILL follows.
stop_since=""
request_stop() {
  [[ -n "$stop_since" ]] || { stop_since="$SECONDS"; stop_all TERM; }
}
any_alive() {
  local pid
  for pid in "${pids[@]+"${pids[@]}"}"; do
    if alive "$pid"; then return 0; fi
  done
  return 1
}
# shellcheck disable=SC2317,SC2329  # invoked by the trap below
on_signal() {
  echo "local_multiprocess.sh: got SIG$1; stopping all processes" >&2
  request_stop
  while any_alive && ((SECONDS - stop_since < grace_s)); do sleep 0.2; done
  exit "$2"
}
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM
trap 'stop_all KILL' EXIT

# Starts every process once and waits for all of them; sets `status`.
run_all() {
  local i idx pid rc stop_due=""
  export CJ_COORDINATOR_ADDRESS="127.0.0.1:${port}"
  echo "local_multiprocess.sh: ${processes} processes, coordinator ${CJ_COORDINATOR_ADDRESS}," \
    "logs in ${logdir}" >&2
  pids=()
  stop_since=""
  # Job control only while starting: every process tree gets its own process group;
  # off again so later foreground commands (sleep) stay in our group and Ctrl-C still
  # reaches this script.
  set -m
  for ((i = 0; i < processes; i++)); do
    (
      export CJ_PROCESS_ID="$i"
      "${cmd[@]}" </dev/null 2>&1 | tee -a "${logdir}/process_${i}.log" |
        awk -v p="[process ${i}] " '{ print p $0; fflush() }'
    ) &
    pids+=("$!")
  done
  set +m

  status=0
  local reaped=()
  while ((${#reaped[@]} < processes)); do
    for idx in "${!pids[@]}"; do
      pid="${pids[idx]}"
      if [[ -n "${reaped[idx]:-}" ]] || kill -0 "$pid" 2>/dev/null; then continue; fi
      rc=0
      wait "$pid" || rc=$?
      reaped[idx]="$rc"
      if ((rc == 0)) || [[ -n "$stop_since" ]]; then continue; fi
      if ((rc == 75 && status == 0)); then
        # 75: a checkpoint of a step every process agreed on is written; the others
        # are saving the same step and exiting too. A SIGTERM now would be their
        # second, which kills a process mid-write; they get --grace seconds first.
        status=75
        stop_due=$((SECONDS + grace_s))
      elif ((rc != 75 && (status == 0 || status == 75))); then
        # Any other failure outranks 75: rerunning would not help.
        status="$rc"
        # The others would wait for the dead peer until JAX's own timeouts (minutes).
        echo "local_multiprocess.sh: process ${idx} exited with status ${rc};" \
          "stopping the others (see ${logdir}/process_${idx}.log)" >&2
        request_stop
      fi
    done
    if [[ -n "$stop_due" ]] && ((SECONDS >= stop_due)); then
      echo "local_multiprocess.sh: a process exited 75 and others still run after" \
        "${grace_s}s; stopping them" >&2
      stop_due=""
      request_stop
    fi
    if ((timeout_s > 0 && SECONDS >= timeout_s && (status == 0 || status == 75))); then
      echo "local_multiprocess.sh: timed out after ${timeout_s}s; stopping all processes" >&2
      status=124
      request_stop
    fi
    if [[ -n "$stop_since" ]] && ((SECONDS - stop_since >= grace_s)); then
      stop_all KILL
    fi
    ((${#reaped[@]} == processes)) || sleep 0.2
  done
  # What outlived its subshell: a JAX process still handling SIGTERM after its subshell
  # died of it, or a background child of the command.
  if any_alive; then
    request_stop
    while any_alive && ((SECONDS - stop_since < grace_s)); do sleep 0.2; done
    stop_all KILL
  fi
}

attempt=0
while :; do
  run_all
  ((status == 75 && attempt < restarts)) || break
  attempt=$((attempt + 1))
  echo "local_multiprocess.sh: the job exited 75 (checkpoint written, rerun to resume);" \
    "restart ${attempt} of at most ${restarts}" >&2
  # The old coordinator's port may linger in TIME_WAIT.
  [[ -n "$fixed_port" ]] || port="$(free_port)"
done

if ((status == 0)); then
  echo "local_multiprocess.sh: all ${processes} processes succeeded" >&2
elif ((status == 75 && restarts > 0)); then
  echo "local_multiprocess.sh: error: the job exited 75 again after ${restarts} restarts" \
    "(--restart-on-75 ${restarts}); rerun the same command to resume from its last" \
    "checkpoint, or raise --restart-on-75" >&2
fi
exit "$status"
