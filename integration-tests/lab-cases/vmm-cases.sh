#!/bin/sh
# Runs inside L1 (or directly on a bare-metal runner): boots the guest under pv-vmm once
# per case and prints the guest's console, pv-vmm's log, its exit status and, while the
# guest idles (pv.idle=N on its command line), the growth of the VM's KVM statistics.
#
# Usage: vmm-cases.sh PV_VMM KERNEL INITRD TIMEOUT NAME CPUS MEMORY CMDLINE_EXTRA
#                    [NAME CPUS MEMORY EXTRA]...
#   CPUS           the --cpus value, e.g. boot=4 or boot=2,dedicated=on
#   MEMORY         the --memory value, e.g. size=512M or size=512M,thp=off
#   CMDLINE_EXTRA  appended to the guest kernel command line ('-' for nothing); with
#                  pv.reboot the guest reboots, and the case ends with SIGTERM to pv-vmm
#                  once the guest has come up twice; with '-- /bin/pv-load KIND SECONDS'
#                  the guest runs that load (add pv.idle=N so the VM outlives its
#                  @@WORK line long enough to be sampled).
#
# Output (parsed by integration-tests, same format as qemu-peer.sh):
#   @@THP <the host's /sys/kernel/mm/transparent_hugepage/enabled>@@  (once, first)
#   @@CASE <name> BEGIN <cpus>@@
#   L2| <each line of the guest's console>
#   VMM| <each line pv-vmm wrote on stderr>
#   @@STAT <name> idle_<statistic> <growth during the idle window>@@
#   @@STAT <name> load_<statistic> <growth from @@GUEST-UP to the load's @@WORK line>@@
#   @@STAT <name> vmm_exit <pv-vmm's exit status>@@
#   @@STAT <name> guest_boots <how often the guest came up>@@
#   @@STAT <name> up_pages_4k|up_pages_2m <KVM's guest-RAM mappings of each size when the
#                  guest first came up>@@
#   @@CASE <name> BOOT <seconds from pv-vmm's start to its exit>@@
#   @@CASE <name> END ok@@  or  @@CASE <name> END fail <reason>@@ (a guest triple fault
#                  fails a case whose EXTRA does not hold reboot=t; the rest is judged by
#                  the test)
set -u

[ $# -ge 8 ] || { echo "usage: $0 PV_VMM KERNEL INITRD TIMEOUT NAME CPUS MEMORY EXTRA..." >&2; exit 2; }
vmm=$1 kernel=$2 initrd=$3 limit=$4
shift 4

[ -c /dev/kvm ] || { echo "no /dev/kvm" >&2; exit 2; }
. "$(dirname "$0")/common.sh"
[ -d /sys/kernel/debug/kvm ] || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null

# The lab's words for every guest (scripts/lab/lib.sh; none on bare metal).
lab_guest=${PV_LAB_GUEST_ARGS:+ $PV_LAB_GUEST_ARGS}

# The host's transparent-huge-page mode, e.g. "always [madvise] never" (the lab test
# expects 2 MiB mappings of guest RAM unless it is "never").
echo "@@THP $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo none)@@"

IDLE_STATS="halt_exits exits halt_wakeup hypercalls"
LOAD_STATS="hypercalls exits"
work=$(mktemp -d /tmp/vmm-cases.XXXXXX)

# run_case NAME CPUS MEMORY EXTRA: one case, its whole output on stdout.
run_case() {
    name=$1 cpus=$2 memory=$3 extra=$4
    [ "$extra" = - ] && extra=""
    rm -f "$work/$name".*
    log=$work/$name.log err=$work/$name.err
    echo "@@CASE $name BEGIN $cpus@@"
    t0=$(now_cs)
    "$vmm" -v --kernel "$kernel" --initramfs "$initrd" --cpus "$cpus" --memory "$memory" \
        --serial tty --cmdline "console=ttyS0 quiet panic=-1$lab_guest $extra" </dev/null >"$log" 2>"$err" &
    pid=$!
    result="" sampled="" loaded="" pages="" exit_status=""
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid"; exit_status=$?
            break
        fi
        # How KVM maps guest RAM once the guest is up (memory.thp: 2 MiB pages or none).
        if [ -z "$pages" ] && grep -q '@@GUEST-UP' "$log"; then
            pages=done
            for s in pages_4k pages_2m; do
                n=$(stat_of "$pid" "$s")
                [ -n "$n" ] && echo "@@STAT $name up_$s $n@@"
            done
        fi
        # Around the guest's load: from its first line to its @@WORK report (sampled before
        # the idle window below, which sleeps).
        if [ -z "$loaded" ] && grep -q '@@GUEST-UP' "$log" && [ -n "$(stat_of "$pid" hypercalls)" ]; then
            loaded=before
            for s in $LOAD_STATS; do
                echo "$s $(stat_of "$pid" "$s")" >>"$work/$name.load"
            done
        fi
        if [ "$loaded" = before ] && grep -q '@@WORK ' "$log"; then
            loaded=done
            while read -r s before; do
                now=$(stat_of "$pid" "$s")
                if [ -n "$now" ] && [ -n "$before" ]; then
                    echo "@@STAT $name load_$s $((now - before))@@"
                fi
            done <"$work/$name.load"
        fi
        if [ -z "$sampled" ] && grep -q '@@GUEST-IDLE-BEGIN@@' "$log"; then
            sampled=yes
            sleep 0.5
            for s in $IDLE_STATS; do
                echo "$s $(stat_of "$pid" "$s")" >>"$work/$name.before"
            done
            sleep 2
            while read -r s before; do
                now=$(stat_of "$pid" "$s")
                if [ -n "$now" ] && [ -n "$before" ]; then
                    echo "@@STAT $name idle_$s $((now - before))@@"
                fi
            done <"$work/$name.before"
        fi
        case "$extra" in
        *pv.reboot*)
            if [ "$(grep -c '@@GUEST-UP' "$log")" -ge 2 ]; then
                kill -TERM "$pid"
                wait "$pid"; exit_status=$?
                break
            fi
            ;;
        esac
        if [ $(($(now_cs) - t0)) -ge $((limit * 100)) ]; then
            result="fail pv-vmm still running after ${limit}s"
            kill -KILL "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
            break
        fi
        sleep 0.1
    done
    t1=$(now_cs)
    tr -d '\r' <"$log" | sed 's/^/L2| /'
    sed 's/^/VMM| /' "$err"
    [ -n "$exit_status" ] && echo "@@STAT $name vmm_exit $exit_status@@"
    echo "@@STAT $name guest_boots $(grep -c '@@GUEST-UP' "$log")@@"
    echo "@@CASE $name BOOT $(((t1 - t0) / 100)).$(printf '%02d' $(((t1 - t0) % 100)))@@"
    # A triple fault fails the case unless its guest was told to reboot by one (reboot=t).
    case " $extra " in
    *" reboot=t "*) ;;
    *) fail_on_triple_fault "$err" ;;
    esac
    [ -z "$result" ] && result=ok
    echo "@@CASE $name END $result@@"
}

status=0
while [ $# -ge 4 ]; do
    out=$(retry_lab_fault run_case "$1" "$2" "$3" "$4")
    printf '%s\n' "$out"
    printf '%s\n' "$out" | grep -q "^@@CASE $1 END ok@@" || status=1
    shift 4
done
rm -rf "$work"
exit $status
