#!/usr/bin/env bash
# Cloud TPU VM slice lifecycle for contrastive_jax: create, install, run, logs, stop, delete,
# and supervise (keep a run going on a queued-resource slice through preemptions).
#
# Every host of a slice runs the same command (multi-controller JAX); gcloud's
# --worker=all fans each step out. The hosts find each other through
# jax.distributed.initialize() (contrastive_jax.distributed), which reads the slice
# layout from the TPU metadata server, so nothing here passes addresses around.
set -euo pipefail

usage() {
  cat <<'EOF_USAGE'
Usage: launch/tpu_vm.sh SUBCOMMAND --name NAME [options] [-- EXTRA...]

Subcommands:
  create     create the slice (EXTRA: more gcloud flags, e.g. --spot); with --queued,
             a queued resource NAME holding the node NAME
  install    put the code on every worker (--repo) and install it into ~/cj_venv with
             Python 3.11 (via uv) and jax[tpu] (EXTRA: more pip requirements)
  run        start `python -m contrastive_jax.main --config=CONFIG --workdir=WORKDIR EXTRA`
             on every worker in the background; EXTRA: --config.key=value overrides
  supervise  run it to the end from here: create the queued resource if needed, install,
             start on every worker, stream each worker's log to LOGDIR/worker_<i>.log;
             rerun after exit 75; delete and recreate the queued resource when the slice
             was preempted (SUSPENDED, FAILED, node gone), reinstall, rerun
  logs       follow the latest run's log of one worker (--worker, default 0)
  stop       stop the run on every worker (SIGTERM, then SIGKILL after 60 s)
  ssh        open a shell on one worker (--worker, default 0)
  delete     delete the slice (asks for confirmation unless --yes); with --queued, the
             queued resource and its node

Options:
  --name NAME               TPU name (default: $CJ_TPU_NAME)
  --zone ZONE               (default: $CJ_TPU_ZONE or us-central2-b, where v4 lives)
  --project PROJECT         (default: gcloud's configured project)
  --accelerator-type TYPE   (create, supervise; default v4-32 = 16 chips on 4 hosts)
  --version VERSION         TPU software version (create, supervise; default
                            tpu-ubuntu2204-base, for v4; v5e: v2-alpha-tpuv5-lite,
                            v5p: v2-alpha-tpuv5, v6e: v2-alpha-tpuv6e)
  --queued                  create/delete: a queued resource instead of a plain node
  --provisioning MODE       queued resources (create --queued, supervise): spot (--spot),
                            best-effort (gcloud alpha, --best-effort), reserved (--reserved)
                            or standard (default)
  --repo URL_OR_PATH        install: a git URL to clone, or a local checkout to copy
                            (tracked and untracked, not ignored, files; default: this checkout)
  --ref REF                 install from a git URL: branch or tag to clone
  --python VERSION          install: Python for ~/cj_venv (default 3.11)
  --config CONFIG           run: config file[:arg] (default configs/simclr.py)
  --workdir DIR             run: checkpoints and metrics; every host must see the
                            same one, so use a bucket: gs://BUCKET/PATH (required)
  --worker N                logs/ssh: which worker (default 0)
  --max-restarts N          supervise: reruns and recreations allowed in all (default 20)
  --backoff SECONDS         supervise: wait before a restart, doubled after each one up
                            to 16x (default 30)
  --poll SECONDS            supervise: between state checks while the slice is queued
                            or provisioning (default 60)
  --logdir DIR              supervise: per-worker logs (default runs/tpu_NAME/logs)
  --simulate-states LIST    supervise --dry-run: the slice states gcloud reports, in
                            order, comma-separated (ACTIVE, WAITING_FOR_RESOURCES,
                            PROVISIONING, SUSPENDED, FAILED, MISSING, ...; then ACTIVE)
  --simulate-exits LIST     supervise --dry-run: each run's exit status on every worker
                            (0, 75, ..., or lost: no status came back; then 0)
  --yes                     delete without asking
  --dry-run                 print the commands instead of running them
  -h, --help                show this help

On the workers: code in ~/contrastive_jax, venv in ~/cj_venv, logs in
~/cj_logs/run_<UTC time>.log (~/cj_logs/latest.log points at the newest), exit status
of the last finished run in ~/cj_logs/run.rc.
See launch/README.md for a worked v4-32 example and the restart paths.
EOF_USAGE
}

die() {
  echo "tpu_vm.sh: $*" >&2
  exit 2
}

# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Runs a command, or with --dry-run prints it.
run_cmd() {
  if ((dry_run)); then
    show "$@"
    echo
  else
    "$@"
  fi
}

(($# > 0)) || { usage >&2; exit 2; }
case "$1" in
  -h | --help) usage; exit 0 ;;
  create | install | run | supervise | logs | stop | ssh | delete) subcommand="$1"; shift ;;
  *) die "unknown subcommand '$1' (see --help)" ;;
esac

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name="${CJ_TPU_NAME:-}"
zone="${CJ_TPU_ZONE:-us-central2-b}"
project=""
accelerator="v4-32"
version="tpu-ubuntu2204-base"
repo="$(dirname "$script_dir")"
ref=""
python_version="3.11"
config="configs/simclr.py"
workdir=""
worker=0
queued=0
provisioning=""
max_restarts=20
backoff=30
poll=60
logdir=""
simulate_states=""
simulate_exits=""
yes=0
dry_run=0

while (($# > 0)); do
  case "$1" in
    --name | --zone | --project | --accelerator-type | --version | --repo | --ref | --python | \
      --config | --workdir | --worker | --provisioning | --max-restarts | --backoff | --poll | \
      --logdir | --simulate-states | --simulate-exits)
      (($# >= 2)) || die "$1 needs a value"
      opt="${1#--}"; value="$2"; shift 2 ;;
    --*=*)
      opt="${1%%=*}"; opt="${opt#--}"; value="${1#*=}"; shift ;;
    --yes) yes=1; shift; continue ;;
    --queued) queued=1; shift; continue ;;
    --dry-run) dry_run=1; shift; continue ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  case "$opt" in
    name) name="$value" ;;
    zone) zone="$value" ;;
    project) project="$value" ;;
    accelerator-type) accelerator="$value" ;;
    version) version="$value" ;;
    repo) repo="$value" ;;
    ref) ref="$value" ;;
    python) python_version="$value" ;;
    config) config="$value" ;;
    workdir) workdir="$value" ;;
    worker) worker="$value" ;;
    provisioning) provisioning="$value" ;;
    max-restarts) max_restarts="$value" ;;
    backoff) backoff="$value" ;;
    poll) poll="$value" ;;
    logdir) logdir="$value" ;;
    simulate-states) simulate_states="$value" ;;
    simulate-exits) simulate_exits="$value" ;;
    *) die "unknown option '--${opt}' (see --help)" ;;
  esac
done
extra=("$@")

[[ -n "$name" ]] || die "--name is required (or set CJ_TPU_NAME)"
[[ "$worker" =~ ^[0-9]+$ ]] || die "--worker must be a worker index (0, 1, ...)"
if ((${#extra[@]} > 0)); then
  case "$subcommand" in
    create | install | run | supervise) ;;
    *) die "'$subcommand' takes no arguments after --" ;;
  esac
fi
if ((queued)) && [[ "$subcommand" != create && "$subcommand" != delete ]]; then
  die "--queued is for create and delete (supervise always uses a queued resource)"
fi
if [[ -n "$provisioning" ]] && ! ((queued)) && [[ "$subcommand" != supervise ]]; then
  die "--provisioning is for queued resources: add --queued (a plain node takes -- --spot)"
fi
qr=(gcloud compute tpus queued-resources)
qr_flags=()
case "${provisioning:-standard}" in
  standard) ;;
  spot) qr_flags=(--spot) ;;
  reserved) qr_flags=(--reserved) ;;
  # Only the alpha command group offers best-effort queued resources.
  best-effort) qr=(gcloud alpha compute tpus queued-resources); qr_flags=(--best-effort) ;;
  *) die "--provisioning must be spot, best-effort, reserved or standard" ;;
esac
if ((!dry_run)); then
  command -v gcloud >/dev/null || die "gcloud not found; install the Google Cloud CLI" \
    "(or use --dry-run)"
fi

gcloud_where=(--zone="$zone")
[[ -z "$project" ]] || gcloud_where+=(--project="$project")
tpu=(gcloud compute tpus tpu-vm)

# Paths on the workers; kept unquoted in remote commands so that ~ expands there.
# shellcheck disable=SC2088
remote_code="~/contrastive_jax"
# shellcheck disable=SC2088
remote_venv="~/cj_venv"
# shellcheck disable=SC2088
remote_logs="~/cj_logs"
running_check="[ -f ${remote_logs}/run.pid ]"
running_check+=" && kill -0 \"\$(cat ${remote_logs}/run.pid)\" 2>/dev/null"

ssh_all() {
  run_cmd "${tpu[@]}" ssh "$name" "${gcloud_where[@]}" --worker=all --command="$1"
}

# Copies the code to every worker and installs it; arguments: more pip requirements.
install_code() {
  local tarball fetch setup clone
  if [[ -d "$repo" ]]; then
    # A tarball of the working tree, so uncommitted edits travel too; .gitignore
    # keeps .venv and runs/ behind.
    tarball="/tmp/contrastive_jax_${name}.tar.gz"
    if ((dry_run)); then
      echo "git -C $(show "$repo") ls-files -z --cached --others --exclude-standard" \
        "| tar -czf $(show "$tarball") -C $(show "$repo") --null -T -"
    elif git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
      git -C "$repo" ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do
          # Tracked files deleted in the working tree would make tar fail.
          if [[ -e "$repo/$f" ]]; then printf '%s\0' "$f"; fi
        done | tar -czf "$tarball" -C "$repo" --null -T -
    else
      tar -czf "$tarball" -C "$repo" --exclude=./.venv --exclude=./runs --exclude=./.git .
    fi
    run_cmd "${tpu[@]}" scp "$tarball" "${name}:contrastive_jax.tar.gz" "${gcloud_where[@]}" \
      --worker=all
    fetch="rm -rf ${remote_code} && mkdir -p ${remote_code}"
    fetch+=" && tar -xzf ~/contrastive_jax.tar.gz -C ${remote_code}"
    fetch+=" && rm ~/contrastive_jax.tar.gz"
  elif [[ "$repo" == *://* || "$repo" == git@* ]]; then
    clone=(git clone --depth 1)
    [[ -z "$ref" ]] || clone+=(--branch "$ref")
    fetch="rm -rf ${remote_code} && $(show "${clone[@]}" "$repo") ${remote_code}"
  else
    die "--repo '$repo' is neither a directory nor a git URL"
  fi
  # TPU images ship Python 3.10 and the package needs >= 3.11; uv fetches one. The tf extra:
  # TFDS datasets (ImageNet) and host-side input need TensorFlow on TPU hosts.
  # pip's --break-system-packages is for images whose Python is externally managed.
  setup="export PATH=\"\$HOME/.local/bin:\$PATH\""
  setup+=" && { python3 -m pip install --user -q -U uv"
  setup+=" || python3 -m pip install --user -q -U --break-system-packages uv; }"
  setup+=" && { [ -x ${remote_venv}/bin/python ]"
  setup+=" || uv venv --python $(show "$python_version") ${remote_venv}; }"
  setup+=" && cd ${remote_code}"
  setup+=" && uv pip install --python ${remote_venv}/bin/python -c constraints.txt -e '.[tf]'"
  setup+=" $(show 'jax[tpu]' "$@")"
  setup+=" && ${remote_venv}/bin/python -c 'import jax, libtpu; print(jax.__version__)'"
  ssh_all "set -euo pipefail; ${fetch} && ${setup}"
}

# A remote command that starts the run in the background and returns. A subshell waits
# for it and writes its exit status to run.rc (supervise reads it); SIGHUP is ignored
# so that a closed ssh connection leaves the run going.
start_snippet() {
  local log main_args s
  log="run_$(date -u +%Y%m%d_%H%M%S).log"
  main_args=(-m contrastive_jax.main --config="$config" --workdir="$workdir"
    "${extra[@]+"${extra[@]}"}")
  s="mkdir -p ${remote_logs} && rm -f ${remote_logs}/run.rc ${remote_logs}/run.pid"
  s+=" && cd ${remote_code} && ln -sfn ${log} ${remote_logs}/latest.log"
  # CJ_DISTRIBUTED=cluster: always let JAX read the slice from the metadata server,
  # even if the TPU probe in distributed.py misses a new TPU generation.
  # The braces keep the `&` on the subshell alone, so the commands before it run here.
  s+=" && { ( trap '' HUP; CJ_DISTRIBUTED=cluster ${remote_venv}/bin/python"
  s+=" $(show "${main_args[@]}") > ${remote_logs}/${log} 2>&1 < /dev/null &"
  s+=" echo \$! > ${remote_logs}/run.pid; wait \$!; echo \$? > ${remote_logs}/run.rc )"
  s+=" > /dev/null 2>&1 < /dev/null & }"
  s+=" && for _ in \$(seq 50); do [ -s ${remote_logs}/run.pid ] && break; sleep 0.1; done"
  printf '%s' "$s"
}

check_workdir() {
  [[ -n "$workdir" ]] || die "--workdir is required (e.g. gs://BUCKET/contrastive_jax/RUN)"
  if [[ "$workdir" != gs://* ]]; then
    echo "tpu_vm.sh: warning: --workdir '$workdir' is not a gs:// path; each host" \
      "will write its own local copy, and checkpoints will not be restorable" >&2
  fi
}

case "$subcommand" in
  create)
    if ((queued)); then
      run_cmd "${qr[@]}" create "$name" --node-id="$name" "${gcloud_where[@]}" \
        --accelerator-type="$accelerator" --runtime-version="$version" \
        "${qr_flags[@]+"${qr_flags[@]}"}" "${extra[@]+"${extra[@]}"}"
    else
      run_cmd "${tpu[@]}" create "$name" "${gcloud_where[@]}" --accelerator-type="$accelerator" \
        --version="$version" "${extra[@]+"${extra[@]}"}"
    fi
    ;;

  install)
    install_code "${extra[@]+"${extra[@]}"}"
    ;;

  run)
    check_workdir
    start="set -euo pipefail; mkdir -p ${remote_logs}"
    start+="; if ${running_check}; then echo \"\$(hostname): a run is still going (pid"
    start+=" \$(cat ${remote_logs}/run.pid)); use: tpu_vm.sh stop\" >&2; exit 1; fi"
    start+="; $(start_snippet)"
    start+="; echo \"\$(hostname): started pid \$(cat ${remote_logs}/run.pid),"
    start+=" log ${remote_logs}/\$(readlink ${remote_logs}/latest.log)\""
    ssh_all "$start"
    ;;

  supervise)
    check_workdir
    # shellcheck source=tpu_supervise.sh source-path=SCRIPTDIR
    source "${script_dir}/tpu_supervise.sh"
    supervise
    ;;

  logs)
    run_cmd "${tpu[@]}" ssh "$name" "${gcloud_where[@]}" --worker="$worker" \
      --command="tail -n +1 -F ${remote_logs}/latest.log"
    ;;

  stop)
    # SIGTERM first: JAX takes it as a preemption notice, so the train loop can
    # checkpoint before exiting.
    stop="if ${running_check}; then pid=\$(cat ${remote_logs}/run.pid); kill -TERM \"\$pid\""
    stop+="; for _ in \$(seq 60); do kill -0 \"\$pid\" 2>/dev/null || break; sleep 1; done"
    stop+="; if kill -0 \"\$pid\" 2>/dev/null; then kill -KILL \"\$pid\"; fi"
    stop+="; echo \"\$(hostname): stopped pid \$pid\""
    stop+="; else echo \"\$(hostname): no run going\"; fi"
    ssh_all "$stop"
    ;;

  ssh)
    run_cmd "${tpu[@]}" ssh "$name" "${gcloud_where[@]}" --worker="$worker"
    ;;

  delete)
    if ((queued)); then
      # --force: delete the node first (a queued resource holding one cannot go alone).
      delete=("${qr[@]}" delete "$name" "${gcloud_where[@]}" --force)
    else
      delete=("${tpu[@]}" delete "$name" "${gcloud_where[@]}")
    fi
    ((!yes)) || delete+=(--quiet)
    run_cmd "${delete[@]}"
    ;;
esac
