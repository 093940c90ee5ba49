# shellcheck shell=bash
# apt_install PACKAGE...: install Debian packages on this machine, non-interactively.
# A fresh machine may have no package lists yet, and old ones may name versions
# the mirror no longer has: so on failure refresh the lists once and retry.
# Run it as a step (scripts/lib/steps.sh): apt's output goes to the step's log.
apt_install() {
    local args=(-y -q --no-install-recommends
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    export DEBIAN_FRONTEND=noninteractive
    apt-get install "${args[@]}" "$@" && return 0
    apt-get update -q || return 1
    apt-get install "${args[@]}" "$@"
}
