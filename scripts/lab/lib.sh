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

# L0's CPU model for L1 (PV_LAB_CPU overrides). MONITOR/MWAIT is taken away: QEMU's TCG
# runs MWAIT as PAUSE on an SMP machine (helper_mwait), so once MWAIT exits are disabled
# (dedicated=on) and the guest sees MWAIT (pv_features::mwait), every idle L2 vCPU spins in
# L1: lab_features went past its 20-minute limit on 2026-12-03. Without it L1's KVM does not
# allow disabling MWAIT exits (mask hlt,pause,cstate, as on kvm_pvm), and the guests idle
# with HLT as they did. scripts/test gives the real-KVM tests (tiny VMs that never idle)
# `-cpu max`, so that real_kvm_mwait_in_guest_shows_monitor still runs in the lab.
# shellcheck disable=SC2034
LAB_CPU="${PV_LAB_CPU:-max,-monitor}"

# L1's CPU count (PV_LAB_SMP overrides). One: with two, L1 panicked and its guests faulted
# under load, in every configuration two sessions tried (scripts/lab/README.md, "Measuring
# the lab's stability"); with one, the same stress ran clean. On 2026-12-04, 12 minutes of
# L1 time each, back to back on this machine: -smp 2 lost L1 twice ("corrupted stack end
# detected inside scheduler") and 7 of 42 guests; -smp 1 lost nothing, 30 of 30 guests.
# The benchmark, whose scenarios need two host CPUs, asks for two itself.
# shellcheck disable=SC2034
LAB_SMP="${PV_LAB_SMP:-1}"

# Exit status the lab uses for its own failures (never the command's).
# shellcheck disable=SC2034
LAB_FAILURE_STATUS=125
# Print a message prefixed with the calling script's name, on stderr.
log() {
    printf '%s: %s\n' "${0##*/}" "$*" >&2
}

# Print lines between rows of '!' so that they stand out in a long log (on stdout).
loud() {
    printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n'
    printf '!!! %s\n' "$@"
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n'
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

# ------------------------------------------------------------------------- host tools
# What each command of the project needs on the host, by set; one table for every script.
# ensure_host_tools SET... checks them all first and installs what is missing in one step
# (Debian packages; QEMU >= 10 from bookworm-backports), saying in one line what it
# installs; where it cannot install (not root, not Debian, PV_HOST_TOOLS_INSTALL=no) it
# names every missing tool and its package and exits 1, before any other work.
#   initramfs  the lab's images: cpio, gzip, a static busybox
#   cc         the guests' static workloads: gcc, a static libc
#   qemu       qemu-system-x86 >= 10 (L1 and the peer VMM), util-linux (flock)
#   lab        initramfs + cc + qemu
#   hostile    the raw PVH test guests: gcc, binutils
#   fuzz       cargo-fuzz's libFuzzer: a C++ compiler
#   python     a python3 that makes venvs (the benchmark report, schemathesis)
#   rust       cargo (rustup's; not installed here)
#   ch         building Cloud Hypervisor with the series: git, cc, rust
LAB_MIN_QEMU_MAJOR=10
LAB_BACKPORTS_LINE="deb http://deb.debian.org/debian bookworm-backports main"

# Major version of qemu-system-x86_64 on PATH, or 0 when absent.
qemu_major() {
    local v
    command -v qemu-system-x86_64 >/dev/null 2>&1 || { echo 0; return; }
    v="$(qemu-system-x86_64 --version | sed -n 's/^QEMU emulator version \([0-9]*\)\..*/\1/p')"
    echo "${v:-0}"
}

# missing_host_tools SET...: prints 'TOOL PACKAGE' for each missing tool (PACKAGE
# 'qemu-system-x86/bookworm-backports' for QEMU, '-' for what apt cannot give).
missing_host_tools() {
    local set busybox="${PV_LAB_BUSYBOX:-/bin/busybox}"
    for set in "$@"; do
        case "$set" in
        lab) missing_host_tools initramfs cc qemu ;;
        initramfs)
            command -v cpio >/dev/null 2>&1 || echo "cpio cpio"
            command -v gzip >/dev/null 2>&1 || echo "gzip gzip"
            { [[ -x "$busybox" ]] && ! ldd "$busybox" >/dev/null 2>&1; } || echo "busybox busybox-static"
            ;;
        cc)
            command -v gcc >/dev/null 2>&1 || echo "gcc gcc"
            [[ -f /usr/lib/x86_64-linux-gnu/libc.a ]] || echo "libc.a libc6-dev"
            ;;
        qemu)
            (($(qemu_major) >= LAB_MIN_QEMU_MAJOR)) ||
                echo "qemu-system-x86_64>=$LAB_MIN_QEMU_MAJOR qemu-system-x86/bookworm-backports"
            command -v flock >/dev/null 2>&1 || echo "flock util-linux"
            ;;
        hostile)
            command -v gcc >/dev/null 2>&1 || echo "gcc gcc"
            command -v ld >/dev/null 2>&1 || echo "ld binutils"
            ;;
        fuzz) command -v c++ >/dev/null 2>&1 || echo "c++ g++" ;;
        python)
            if ! command -v python3 >/dev/null 2>&1; then
                echo "python3 python3"
                echo "python3-venv python3-venv"
            elif ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
                echo "python3-venv python3-venv"
            fi
            ;;
        rust) command -v cargo >/dev/null 2>&1 || echo "cargo -" ;;
        ch)
            # Cloud Hypervisor: git am for the series, a C compiler for its -sys crates.
            command -v git >/dev/null 2>&1 || echo "git git"
            command -v flock >/dev/null 2>&1 || echo "flock util-linux"
            missing_host_tools cc rust
            ;;
        *) die "ensure_host_tools: unknown set '$set'" ;;
        esac
    done | awk '!seen[$0]++'
}

# ensure_host_tools SET...: see above. Serialised (parallel tests may call it together).
ensure_host_tools() {
    local missing tools pkgs=() backports=0 tool pkg
    missing="$(missing_host_tools "$@")"
    [[ -n "$missing" ]] || return 0
    tools="$(cut -d' ' -f1 <<<"$missing" | paste -sd' ')"
    if grep -q ' -$' <<<"$missing"; then
        die "missing $tools: cargo comes with Rust (rustup, https://rustup.rs; 1.85 or newer), not from apt"
    fi
    while read -r tool pkg; do
        if [[ "$pkg" == */bookworm-backports ]]; then backports=1; pkgs+=("${pkg%/*}"); else pkgs+=("$pkg"); fi
    done <<<"$missing"
    local why=""
    if [[ "${PV_HOST_TOOLS_INSTALL:-yes}" == no ]]; then
        why="PV_HOST_TOOLS_INSTALL=no"
    elif [[ "$(id -u)" != 0 ]]; then
        why="not root"
    elif [[ ! -r /etc/debian_version ]]; then
        why="not a Debian system"
    fi
    [[ -z "$why" ]] || die "missing $tools; install the Debian packages ${pkgs[*]}$( ((backports)) && echo " (qemu-system-x86 >= $LAB_MIN_QEMU_MAJOR from bookworm-backports)") ($why)"
    exec 8>>/var/tmp/pv-lab-install.lock
    flock -w 900 8 || die "waited 900 s for another install of the host tools"
    # Someone else may have just installed them.
    missing="$(missing_host_tools "$@")"
    [[ -n "$missing" ]] || { exec 8>&-; return 0; }
    log "installing ${pkgs[*]} with apt-get (missing: $tools; once per machine)"
    local aptlog
    aptlog="$(mktemp "${TMPDIR:-/tmp}/pv-apt.XXXXXX")"
    local apt_etc="${PV_APT_ETC:-/etc/apt}"
    if ((backports)) && ! grep -rqsE '^[^#]*bookworm-backports' "$apt_etc/sources.list" "$apt_etc/sources.list.d/"; then
        printf '%s\n' "$LAB_BACKPORTS_LINE" >"$apt_etc/sources.list.d/bookworm-backports.list"
        apt_update_once force 2>>"$aptlog" || { tail -n 20 "$aptlog" >&2; die "apt-get update failed"; }
    else
        apt_update_once 2>>"$aptlog" || { tail -n 20 "$aptlog" >&2; die "apt-get update failed"; }
    fi
    local args=(-y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends)
    ((backports)) && args+=(-t bookworm-backports)
    if ! DEBIAN_FRONTEND=noninteractive apt-get install "${args[@]}" "${pkgs[@]}" >>"$aptlog" 2>&1; then
        tail -n 20 "$aptlog" >&2
        die "apt-get install ${pkgs[*]} failed (its output: $aptlog)"
    fi
    rm -f "$aptlog"
    missing="$(missing_host_tools "$@")"
    [[ -z "$missing" ]] || die "still missing after apt-get install ${pkgs[*]}: $(cut -d' ' -f1 <<<"$missing" | paste -sd' ')"
    exec 8>&-
}
