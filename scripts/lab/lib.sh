# shellcheck shell=bash
# Shared helpers for the KVM lab scripts. Source it; do not execute it.
#
# Sets:
#   LAB_DIR    directory of the lab scripts (scripts/lab)
#   REPO       repository root
#   PV_CACHE   cache root (default: $REPO/.cache)
#   LAB_CACHE  $PV_CACHE/lab
#   LAB_GUEST_ARGS  kernel command-line words for L2 guests in the lab

LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$LAB_DIR/../.." && pwd)"
PV_CACHE="${PV_CACHE:-$REPO/.cache}"
# shellcheck disable=SC2034 # used by the scripts that source this file
LAB_CACHE="$PV_CACHE/lab"
export PV_CACHE

# Kernel command-line words for every L2 Linux guest booted in the lab (scripts/lab/run
# exports them into L1 as PV_LAB_GUEST_ARGS; a caller's PV_LAB_GUEST_ARGS overrides, empty
# for none). The guest keeps its local APIC timer out of TSC-deadline mode: L2 guests on
# TSC-deadline timers made L1 (KVM under TCG's emulated SVM) panic or hang within minutes
# (scripts/lab/README.md). On a host with hardware virtualization nothing is added.
# shellcheck disable=SC2034
LAB_GUEST_ARGS="${PV_LAB_GUEST_ARGS-lapic=notscdeadline}"

# Exit status the lab uses for its own failures (never the command's).
# shellcheck disable=SC2034
LAB_FAILURE_STATUS=125
# A lab failure that is L1 crashing (the runner's LAB FAILURE line): a kernel panic, a reset,
# or death without the exit marker. The tests' LabCommand (integration_tests::l1_crashed)
# and scripts/bench --quick run a command once more after one.
# shellcheck disable=SC2034
LAB_L1_CRASH_RE='^LAB FAILURE: (L1 kernel panic|L1 reset|L1 died without the exit marker)'

# Print a message prefixed with the calling script's name, on stderr.
log() {
    printf '%s: %s\n' "${0##*/}" "$*" >&2
}

# Print an error and exit 1.
die() {
    printf '%s: error: %s\n' "${0##*/}" "$*" >&2
    exit 1
}

# need CMD [PACKAGE]: fail with a message naming the missing command and its package.
need() {
    local cmd="$1" pkg="${2:-$1}"
    command -v "$cmd" >/dev/null 2>&1 ||
        die "'$cmd' not found (Debian package '$pkg'; scripts/lab/install-qemu installs the lab's host tools)"
}

# Run 'apt-get update' at most once per 12 hours (the stamp lives in /var/tmp),
# or always when called with 'force'. Serialised with other lab scripts.
apt_update_once() {
    local stamp=/var/tmp/pv-lab-apt-update.stamp
    fresh() { [[ -f "$stamp" && -n "$(find "$stamp" -mmin -720 2>/dev/null)" ]]; }
    [[ "${1:-}" != force ]] && fresh && return 0
    [[ "$(id -u)" == 0 ]] || die "apt-get update needs root"
    (
        flock -w 900 7 || die "waited 900 s for another apt-get update"
        # Someone else may have just done it.
        [[ "${1:-}" != force ]] && fresh && exit 0
        log "apt-get update"
        apt-get update -qq -o DPkg::Lock::Timeout=300 >&2 || die "apt-get update failed"
        touch "$stamp"
    ) 7>>/var/tmp/pv-lab-apt.lock
}

# sha256 of stdin, hex only.
sha256_stdin() {
    sha256sum | cut -d' ' -f1
}

# sha256 of a file, hex only.
sha256_file() {
    sha256sum -- "$1" | cut -d' ' -f1
}

# True on a host with hardware virtualization that KVM uses (vmx/svm and kvm_intel or
# kvm_amd loaded): real KVM is there directly and the lab is not needed.
host_has_hw_virt() {
    grep -qwE 'vmx|svm' /proc/cpuinfo 2>/dev/null &&
        { [[ -d /sys/module/kvm_intel ]] || [[ -d /sys/module/kvm_amd ]]; }
}
