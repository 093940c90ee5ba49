# shellcheck shell=bash
# Progress lines for the first-run scripts (bootstrap, services, prometheus-tools,
# demo, test): one line per step with the elapsed time, the raw output of every
# step in one log file, and that output's tail only when a step fails.
#
#   . scripts/lib/steps.sh
#   steps_begin demo                    # log: .cache/logs/demo.log, clock at 0
#   step "building the root" build_root /tmp/x
#       -> [ 12.3s] raw output of each step: .../.cache/logs/demo.log   (first step only)
#       -> [ 12.3s] building the root … done (41.0s)
#   step_note "TimescaleDB root: cached"
#       -> [ 53.3s] TimescaleDB root: cached
#
# A script run by another one (scripts/demo runs scripts/bootstrap and
# scripts/services) finds STEPS_LOG and STEPS_T0 in its environment and keeps
# its caller's log and clock, so one first run is one log and one time line.
# (Not SENSORD_*: sensord refuses SENSORD_ variables that name no config section,
# and the daemons that scripts/demo and the tests start inherit this environment.)
#
# `step` runs its command in a subshell with errexit on and stdout/stderr
# appended to the log: a `die` or failing command inside ends the step, not
# the script, so the step can still print what failed -- and variables the
# command sets do not outlive the step. On failure `step` prints the last
# STEPS_TAIL (40) lines the step wrote and the log's path, and exits with the
# command's status.

STEPS_TAIL=${STEPS_TAIL:-40}

# Microseconds since the epoch; EPOCHREALTIME's decimal point follows the locale.
_steps_now() { printf '%s' "${EPOCHREALTIME//[!0-9]/}"; }

# "12.3s" for a span of $1 microseconds.
_steps_span() { printf '%d.%ds' $(($1 / 1000000)) $(($1 / 100000 % 10)); }

_steps_stamp() { printf '[%6s]' "$(_steps_span $(($(_steps_now) - STEPS_T0)))"; }

# Start the log and the clock, unless a calling script already did.
steps_begin() {
    local name=$1 dir
    if [[ -n ${STEPS_LOG:-} && -n ${STEPS_T0:-} && -w ${STEPS_LOG:-} ]]; then
        return 0
    fi
    dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.cache/logs"
    mkdir -p "$dir"
    export STEPS_LOG="$dir/$name.log"
    export STEPS_T0
    STEPS_T0=$(_steps_now)
    printf "%s started %s\n" "$name" "$(date -u +%FT%TZ)" >"$STEPS_LOG"
}

step_note() {
    printf '%s %s\n' "$(_steps_stamp)" "$*"
}

step() {
    local what=$1 start offset rc
    shift
    start=$(_steps_now)
    offset=$(stat -c %s "$STEPS_LOG")
    # The log's path, once per run: before the first step that writes to it.
    grep -q '^=== ' "$STEPS_LOG" || step_note "raw output of each step: $STEPS_LOG"
    printf '%s %s … ' "$(_steps_stamp)" "$what"
    printf '\n=== %s: %s\n' "$what" "$*" >>"$STEPS_LOG"
    # errexit is ignored inside anything run as a condition (if, ||, &&), so
    # the subshell runs as a plain command with errexit switched off around it
    # (and step itself must not be called as a condition).
    local errexit=$-
    set +e
    (set -e; "$@") </dev/null >>"$STEPS_LOG" 2>&1
    rc=$?
    [[ $errexit != *e* ]] || set -e
    if [[ $rc -eq 0 ]]; then
        printf 'done (%s)\n' "$(_steps_span $(($(_steps_now) - start)))"
        return 0
    fi
    printf 'FAILED after %s (exit %d)\n' "$(_steps_span $(($(_steps_now) - start)))" "$rc"
    {
        printf -- '--- last %d lines of its output:\n' "$STEPS_TAIL"
        tail -c +"$((offset + 1))" "$STEPS_LOG" | tail -n "$STEPS_TAIL"
        printf -- '--- full log: %s\n' "$STEPS_LOG"
    } >&2
    exit "$rc"
}
