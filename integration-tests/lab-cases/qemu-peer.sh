#!/bin/sh
# Runs inside L1 (or directly on a bare-metal runner): boots the guest kernel under QEMU
# with KVM once per case, prints the guest's console, its boot time and the VM's KVM
# statistics from debugfs (read while the VM still exists).
#
# Usage: qemu-peer.sh QEMU KERNEL INITRD SMP TIMEOUT NAME CPU [NAME CPU]...
#   NAME  a label for the case; CPU  the -cpu argument (e.g. host, or host,kvm-pv-ipi=off)
#
# Output (one line each, parsed by integration-tests):
#   @@RETRY <name> <why>@@   (before a case run again after the lab lost its guest, see
#                            retry_lab_fault in common.sh)
#   @@CASE <name> BEGIN <cpu>@@
#   L2| <each line of the guest's console>
#   @@CASE <name> BOOT <seconds from QEMU start to @@GUEST-DONE@@>@@
#   @@STAT <name> <statistic> <value>@@       (every file of /sys/kernel/debug/kvm/<pid>-<fd>/)
#   @@CASE <name> END ok@@  or  @@CASE <name> END fail <reason>@@
# Exit status: 0 when every case reached @@GUEST-DONE@@, 1 otherwise.
set -u

[ $# -ge 7 ] || { echo "usage: $0 QEMU KERNEL INITRD SMP TIMEOUT NAME CPU [NAME CPU]..." >&2; exit 2; }
qemu=$1 kernel=$2 initrd=$3 smp=$4 limit=$5
shift 5

[ -c /dev/kvm ] || { echo "no /dev/kvm" >&2; exit 2; }
if [ ! -d /sys/kernel/debug/kvm ]; then
    mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
fi
[ -d /sys/kernel/debug/kvm ] || echo "warning: no /sys/kernel/debug/kvm (debugfs); no statistics" >&2

. "$(dirname "$0")/common.sh"
# The lab's words for every guest (scripts/lab/lib.sh; none on bare metal).
lab_guest=${PV_LAB_GUEST_ARGS:+ $PV_LAB_GUEST_ARGS}

work=$(mktemp -d /tmp/qemu-peer.XXXXXX)

# run_case NAME CPU: one case, its whole output on stdout.
run_case() {
    name=$1 cpu=$2
    log=$work/$name.log
    echo "@@CASE $name BEGIN $cpu@@"
    t0=$(now_cs)
    # -no-shutdown: after the guest powers off the VM stays (stopped) so that its
    # debugfs statistics can still be read; we end QEMU ourselves.
    "$qemu" -nodefaults -no-user-config -enable-kvm -cpu "$cpu" -smp "$smp" -m 512M \
        -kernel "$kernel" -initrd "$initrd" \
        -append "console=ttyS0 quiet panic=-1$lab_guest" \
        -nographic -serial stdio -monitor none -no-reboot -no-shutdown \
        </dev/null >"$log" 2>&1 &
    qpid=$!
    result="" last_exits="" t_sample=$t0
    while :; do
        if grep -q '@@GUEST-DONE@@' "$log"; then result=ok; break; fi
        if ! kill -0 "$qpid" 2>/dev/null; then result="fail QEMU exited before the guest finished"; break; fi
        # A guest that resets (a triple fault, too) is stopped by -no-reboot -no-shutdown,
        # silently: its VM's exit count standing still for 10 s tells (the quietest stretch
        # of a booting guest, decompressing the kernel, lasts a few seconds in the lab; once
        # up, this guest prints its lines and powers off at once). Seen after @@GUEST-UP
        # too (CI, 2026-11-26: up at 3.4 s, then nothing for 120 s).
        if [ $(($(now_cs) - t_sample)) -ge 1000 ]; then
            t_sample=$(now_cs)
            exits=$(stat_of "$qpid" exits)
            if [ -n "$exits" ] && [ "$exits" = "$last_exits" ]; then
                if grep -q '@@GUEST-UP' "$log"; then when=after; else when=before; fi
                result="fail the guest reset $when it was up (its VM stopped: $exits exits, none in 10 s)"
                break
            fi
            last_exits=$exits
        fi
        if [ $(($(now_cs) - t0)) -ge $((limit * 100)) ]; then result="fail guest not done after ${limit}s"; break; fi
        sleep 0.1
    done
    t1=$(now_cs)
    if [ "$result" = ok ]; then
        # Let the guest's poweroff reach KVM, then read the VM's counters.
        sleep 0.5
        dir=""
        for d in /sys/kernel/debug/kvm/"$qpid"-*; do
            if [ -d "$d" ]; then dir=$d; break; fi
        done
        if [ -n "$dir" ]; then
            for f in "$dir"/*; do
                [ -f "$f" ] || continue
                v=$(cat "$f" 2>/dev/null) || continue
                case "$v" in '' | *[!0-9]*) continue ;; esac
                echo "@@STAT $name ${f##*/} $v@@"
            done
        else
            echo "warning: no debugfs directory for QEMU pid $qpid" >&2
        fi
    fi
    kill "$qpid" 2>/dev/null
    wait "$qpid" 2>/dev/null
    tr -d '\r' <"$log" | sed 's/^/L2| /'
    echo "@@CASE $name BOOT $(((t1 - t0) / 100)).$(printf '%02d' $(((t1 - t0) % 100)))@@"
    echo "@@CASE $name END $result@@"
}

status=0
while [ $# -ge 2 ]; do
    out=$(retry_lab_fault run_case "$1" "$2")
    printf '%s\n' "$out"
    printf '%s\n' "$out" | grep -q "^@@CASE $1 END ok@@" || status=1
    shift 2
done
rm -rf "$work"
exit $status
