# The supervise subcommand of tpu_vm.sh (sourced by it, not run): keeps one training
# run going on a queued-resource slice until it finishes, from a workstation or a small VM.
#
# One attempt is one `gcloud ... ssh --worker=all` whose remote command starts the run on
# every worker (or attaches to the one already going), prints its log with each line
# prefixed "[worker <i>] ", and ends with "[worker <i>] CJ_EXIT_STATUS=<status>". Then:
#   every worker 0                 -> done;
#   slice not ACTIVE or node gone  -> delete and recreate the queued resource, wait for
#                                     ACTIVE, reinstall, rerun;
#   75 (and 0), or no status back  -> rerun (the remote command attaches to a run still
#                                     going, so a dropped connection loses nothing);
#   any other status               -> stop: a rerun would fail the same way.
# Each rerun or recreation counts against --max-restarts, after a --backoff wait.
# Uses tpu_vm.sh's variables and functions (run_cmd, ssh_all, install_code, start_snippet).
# shellcheck shell=bash disable=SC2154  # the variables are set by tpu_vm.sh

say() { echo "tpu_vm.sh supervise: $*" >&2; }

fail() {
  echo "tpu_vm.sh supervise: error: $2" >&2
  exit "$1"
}

pause() {
  if ((dry_run)); then
    echo "sleep $1"
  elif (($1 > 0)); then
    sleep "$1"
  fi
}

# What supervise does about a slice state: ready, wait, recreate or unknown.
state_kind() {
  case "$1" in
    ACTIVE) echo ready ;;
    ACCEPTED | CREATING | WAITING_FOR_RESOURCES | PROVISIONING | SUSPENDING | DELETING | \
      NODE_CREATING | NODE_STARTING | NODE_RESTARTING | NODE_REPAIRING) echo wait ;;
    SUSPENDED | FAILED | MISSING | NODE_*) echo recreate ;;
    *) echo unknown ;;
  esac
}

# Sets `state` (the queued resource's, or NODE_<state> when the queued resource is
# ACTIVE but its node is not READY; MISSING when gcloud says NOT_FOUND) and `workers`.
slice_state() {
  local out node_state
  workers=""
  if ((dry_run)); then
    run_cmd "${qr[@]}" describe "$name" "${gcloud_where[@]}" --format='value(state.state)'
    state="${sim_states[sim_state_i]:-ACTIVE}"
    sim_state_i=$((sim_state_i + 1))
    if [[ "$state" == ACTIVE ]]; then
      run_cmd "${tpu[@]}" describe "$name" "${gcloud_where[@]}" \
        --format='value(state,networkEndpoints.len())'
    fi
    echo "# -> ${state}"
    workers=1
    return
  fi
  if out="$("${qr[@]}" describe "$name" "${gcloud_where[@]}" --format='value(state.state)' \
    2>"$gcloud_err")"; then
    state="${out:-UNKNOWN}"
  elif grep -q NOT_FOUND "$gcloud_err"; then
    state=MISSING
  else
    state=UNKNOWN
  fi
  [[ "$state" == ACTIVE ]] || return 0
  # An ACTIVE queued resource can still hold a preempted or deleted node.
  if out="$("${tpu[@]}" describe "$name" "${gcloud_where[@]}" \
    --format='value(state,networkEndpoints.len())' 2>"$gcloud_err")"; then
    read -r node_state workers <<<"$out"
    [[ "$workers" =~ ^[0-9]+$ ]] || workers=""
    [[ "$node_state" == READY ]] || state="NODE_${node_state:-UNKNOWN}"
  elif grep -q NOT_FOUND "$gcloud_err"; then
    state=NODE_MISSING
  else
    state=UNKNOWN
  fi
}

# Counts one restart against --max-restarts, then waits the backoff.
count_restart() {
  local delay="$backoff" i
  restarts=$((restarts + 1))
  if ((restarts > max_restarts)); then
    fail 1 "$1, and ${max_restarts} restarts are used up (--max-restarts ${max_restarts});" \
      "the last checkpoint is in ${workdir}: run supervise again to continue from it"
  fi
  for ((i = 1; i < restarts && i <= 4; i++)); do delay=$((delay * 2)); done
  say "$1; restart ${restarts} of at most ${max_restarts} in ${delay}s"
  pause "$delay"
}

recreate_slice() {
  if [[ "$state" != MISSING ]]; then
    say "deleting queued resource ${name} (${state}) and its node"
    run_cmd "${qr[@]}" delete "$name" "${gcloud_where[@]}" --force --quiet ||
      say "delete failed; checking the state again"
  fi
  say "creating queued resource ${name}: ${accelerator}, ${version}," \
    "${provisioning:-standard} provisioning"
  run_cmd "${qr[@]}" create "$name" --node-id="$name" "${gcloud_where[@]}" \
    --accelerator-type="$accelerator" --runtime-version="$version" \
    "${qr_flags[@]+"${qr_flags[@]}"}" || say "create failed; checking the state again"
  installed=0
}

# Returns once the slice is ACTIVE with a READY node, recreating it when it is lost.
ensure_active() {
  local unknown=0
  while :; do
    if [[ -n "$known_state" ]]; then
      state="$known_state"
      known_state=""
    else
      slice_state
    fi
    case "$(state_kind "$state")" in
      ready) recreate_is_counted=0; return ;;
      wait) unknown=0; say "${name} is ${state}; checking again in ${poll}s"; pause "$poll" ;;
      recreate)
        unknown=0
        # The first creation, and a recreation that a failed run already counted, are free.
        if ((recreate_is_counted)); then
          recreate_is_counted=0
        else
          count_restart "the slice is ${state}"
        fi
        recreate_slice
        pause "$poll"
        ;;
      *)
        unknown=$((unknown + 1))
        ((unknown < 10)) || fail 1 "gcloud could not tell the state of ${name} 10 times:" \
          "$(tail -n 3 "$gcloud_err" 2>/dev/null)"
        say "state of ${name} unknown (${state}); checking again in ${poll}s"
        pause "$poll"
        ;;
    esac
  done
}

# The remote command of one attempt: attach to the run going on a worker, or start one.
attach_snippet() {
  local s metadata
  metadata="http://metadata.google.internal/computeMetadata/v1/instance/attributes"
  s="W=\$(curl -sf -m 5 -H 'Metadata-Flavor: Google' ${metadata}/agent-worker-number"
  s+=" 2>/dev/null || true); case \"\$W\" in '' | *[!0-9]*) W=\$(hostname) ;; esac"
  s+="; if [ ! -x ${remote_venv}/bin/python ]; then"
  s+=" echo \"[worker \$W] CJ_EXIT_STATUS=not-installed\"; exit 0; fi"
  s+="; if ${running_check}; then echo \"[worker \$W] attached to the run already going"
  s+=" (pid \$(cat ${remote_logs}/run.pid)); its log from the start follows\""
  s+="; else $(start_snippet); fi"
  s+="; tail -n +1 -F --pid=\"\$(cat ${remote_logs}/run.pid)\" ${remote_logs}/latest.log"
  s+=" 2>/dev/null | sed -u \"s/^/[worker \$W] /\""
  # The subshell writes run.rc right after the run ends, maybe after tail saw it end.
  s+="; for _ in \$(seq 30); do [ -f ${remote_logs}/run.rc ] && break; sleep 1; done"
  s+="; echo \"[worker \$W] CJ_EXIT_STATUS=\$(cat ${remote_logs}/run.rc 2>/dev/null"
  s+=" || echo unknown)\""
  printf '%s' "$s"
}

# One attempt; fills `codes` (worker -> exit status) from the status lines.
run_attempt() {
  local w code status_file
  attempt=$((attempt + 1))
  codes=()
  say "attempt ${attempt}: starting (or attaching to) the run on every worker of ${name}"
  if ((dry_run)); then
    ssh_all "$(attach_snippet)"
    code="${sim_exits[sim_exit_i]:-0}"
    sim_exit_i=$((sim_exit_i + 1))
    echo "# -> every worker: ${code}"
    [[ "$code" == lost ]] || codes[0]="$code"
    return
  fi
  status_file="$(mktemp)"
  # Lines "[worker i] ..." go to LOGDIR/worker_i.log, anything else (gcloud's own) to
  # LOGDIR/gcloud.log; everything is echoed here too.
  "${tpu[@]}" ssh "$name" "${gcloud_where[@]}" --worker=all --command="$(attach_snippet)" \
    </dev/null 2>&1 | awk -v dir="$logdir" -v attempt="$attempt" -v status="$status_file" '
      { print; fflush() }
      match($0, /\[worker [^]]+\] /) {
        w = substr($0, RSTART + 8, RLENGTH - 10); rest = substr($0, RSTART + RLENGTH)
        f = dir "/worker_" w ".log"
        if (!(w in seen)) { seen[w] = 1; print "=== attempt " attempt " ===" >> f }
        if (rest ~ /^CJ_EXIT_STATUS=/) { print w, substr(rest, 16) >> status; fflush(status) }
        else { print rest >> f; fflush(f) }
        next
      }
      { print >> (dir "/gcloud.log"); fflush(dir "/gcloud.log") }' || true
  while read -r w code; do codes["$w"]="$code"; done <"$status_file"
  rm -f "$status_file"
}

supervise() {
  local w code reason bad finished installed=1 restarts=0 attempt=0
  local recreate_is_counted=1 known_state="" state="" workers="" sim_state_i=0 sim_exit_i=0
  local -a sim_states=() sim_exits=()
  local -A codes=()
  local gcloud_err="/dev/null"
  [[ "$max_restarts" =~ ^[0-9]+$ ]] || die "--max-restarts must be a whole number"
  [[ "$backoff" =~ ^[0-9]+$ ]] || die "--backoff must be a whole number of seconds"
  [[ "$poll" =~ ^[0-9]+$ ]] || die "--poll must be a whole number of seconds"
  if [[ -n "$simulate_states$simulate_exits" ]] && ((!dry_run)); then
    die "--simulate-states and --simulate-exits need --dry-run"
  fi
  IFS=, read -ra sim_states <<<"$simulate_states"
  IFS=, read -ra sim_exits <<<"$simulate_exits"
  for code in "${sim_states[@]+"${sim_states[@]}"}"; do
    [[ "$(state_kind "$code")" != unknown ]] ||
      die "--simulate-states: '$code' is not a slice state (ACTIVE, PROVISIONING, SUSPENDED, ...)"
  done
  for code in "${sim_exits[@]+"${sim_exits[@]}"}"; do
    [[ "$code" =~ ^([0-9]+|lost)$ ]] ||
      die "--simulate-exits: '$code' is not an exit status or lost"
  done
  logdir="${logdir:-runs/tpu_${name}/logs}"
  if ((!dry_run)); then
    mkdir -p "$logdir"
    gcloud_err="$(mktemp)"
    # shellcheck disable=SC2064  # expand now: the variable is local
    trap "rm -f '$gcloud_err'" EXIT
  fi
  say "${name} (${zone}): run ${config} in ${workdir}; logs in ${logdir}"

  while :; do
    ensure_active
    if ((!installed)); then
      # A new slice may refuse ssh for a while; that counts as a restart, not a failure.
      if ! install_code; then count_restart "installing on ${name} failed"; continue; fi
      installed=1
    fi
    run_attempt

    finished=1
    bad=""
    for w in "${!codes[@]}"; do
      code="${codes[$w]}"
      [[ "$code" == 0 ]] || finished=0
      case "$code" in
        0 | 75) ;;
        not-installed) ;;
        *) bad+=" worker ${w}: ${code}" ;;
      esac
    done
    # A worker that sent no status has not finished.
    if ((${#codes[@]} == 0 || ${#codes[@]} < ${workers:-0})); then finished=0; fi
    if ((finished)); then
      say "every worker exited 0: the run is finished (${attempt} attempts, ${restarts} restarts)"
      return 0
    fi
    if [[ " ${codes[*]} " == *" not-installed "* ]]; then
      ((installed != 2)) || fail 1 "the code is still not installed after install_code; see above"
      say "the code is not installed on every worker; installing"
      install_code || fail 1 "installing on ${name} failed; see above"
      installed=2
      continue
    fi

    slice_state  # Preempted, or did the run itself end?
    if [[ "$(state_kind "$state")" == ready ]]; then
      if [[ -n "$bad" ]]; then
        code="${bad##*: }"
        [[ "$code" =~ ^[0-9]+$ ]] || code=1
        fail "$code" "the run failed (${bad# }); not restarting, a rerun would fail the same" \
          "way. Logs: ${logdir}/worker_<i>.log"
      fi
      if [[ " ${codes[*]} " == *" 75 "* ]]; then
        reason="the run exited 75 (a checkpoint is written)"
      else
        reason="no exit status came back from every worker (ssh lost?)"
      fi
    else
      reason="the slice is ${state}"
      known_state="$state"
    fi
    count_restart "$reason"
    recreate_is_counted=1
  done
}
