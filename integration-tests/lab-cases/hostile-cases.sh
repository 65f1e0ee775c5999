#!/bin/sh
# Runs inside L1 (or directly on a bare-metal runner): boots raw PVH guests (no Linux,
# integration-tests/guest/hostile/) under pv-vmm, one case at a time, with the REST API on.
# Each case waits for the guest's last line (@@HOSTILE-DONE ...@@ or @@IDLE-UP@@), then,
# with the guest halted and its last steal-time value still programmed, asks the API for
# vmm.ping, vm.info and vm.counters (twice, a second apart), measures the CPU time each
# vCPU thread takes over 2 s, checks that pv-vmm is still alive and whether the host kernel
# logged a warning, and shuts pv-vmm down through the API. The guest's command line is
# "pv-hostile case=NAME": a NAME containing kick_ap makes the hostile guest PV-kick the
# vCPU that never started.
#
# Usage: hostile-cases.sh PV_VMM PV_REMOTE MODULE NAME CPUS GUEST [NAME CPUS GUEST]...
#   MODULE  a small file passed as --initramfs (PVH module 0; the guests print its start)
#   CPUS    the --cpus value, e.g. boot=2 or boot=2,kvm_pv=off
#   GUEST   the PVH ELF image to boot
#
# Output (parsed by integration-tests/tests/lab_hostile.rs):
#   @@HOST <what ran this: kernel, KVM module, CPU vendor>@@
#   @@CASE <name> BEGIN <cpus>@@
#   @@API <name> <step> <pv-remote's status> <one line of JSON or the error>@@
#   @@STAT <name> <what> <number>@@     alive (1/0), host_warnings, vmm_exit, guest_done_cs,
#                                       cpu_ticks_vcpuN (CPU time of that thread over 2 s)
#   L2| <each line of the guest's serial output>
#   VMM| <each line pv-vmm wrote on stderr>
#   @@CASE <name> END ok@@  or  @@CASE <name> END fail <reason>@@
set -u
[ $# -ge 6 ] || { echo "usage: $0 PV_VMM PV_REMOTE MODULE NAME CPUS GUEST..." >&2; exit 2; }
vmm=$1 remote=$2 module=$3
shift 3
[ -c /dev/kvm ] || { echo "no /dev/kvm" >&2; exit 2; }

now_cs() { read -r up _ </proc/uptime; echo "${up%.*}${up#*.}" | sed 's/^0*//;s/^$/0/'; }
host_warnings() { dmesg 2>/dev/null | grep -c -E 'WARNING:|BUG:|Call Trace:' ; }
# ticks: "vcpuN utime+stime" for each vCPU thread of pv-vmm ($pid).
ticks() {
    for t in /proc/"$pid"/task/*; do
        comm=$(cat "$t/comm" 2>/dev/null)
        case "$comm" in
        vcpu*)
            # shellcheck disable=SC2046 # fields 14 and 15 of stat: utime, stime
            set -- $(cut -d' ' -f14,15 "$t/stat")
            echo "$comm $(($1 + $2))"
            ;;
        esac
    done
}

kmod=none
for m in kvm_amd kvm_intel; do [ -d "/sys/module/$m" ] && kmod=$m; done
echo "@@HOST kernel=$(uname -r) kvm_module=$kmod cpu=$(grep -m1 '^vendor_id' /proc/cpuinfo | sed 's/.*: //')@@"

work=$(mktemp -d /tmp/hostile-cases.XXXXXX)
status=0
while [ $# -ge 3 ]; do
    name=$1 cpus=$2 guest=$3
    shift 3
    sock=$work/$name.sock log=$work/$name.log err=$work/$name.err
    result=ok
    fail() { [ "$result" = ok ] && result="fail $*"; }
    api() {
        step=$1; shift
        out=$("$remote" --api-socket "$sock" "$@" 2>"$work/remote.err"); rc=$?
        [ $rc -ne 0 ] && out=$(cat "$work/remote.err")
        echo "@@API $name $step $rc $(echo "$out" | tr -d '\n')@@"
        return $rc
    }
    echo "@@CASE $name BEGIN $cpus@@"
    warnings_before=$(host_warnings)
    : >"$log"
    t0=$(now_cs)
    "$vmm" -v --api-socket "path=$sock" --kernel "$guest" --initramfs "$module" \
        --cmdline "pv-hostile case=$name" --cpus "$cpus" --memory size=256M \
        --serial "file=$log" </dev/null 2>"$err" &
    pid=$!
    # The guest's last line, or its death, or 180 s.
    while :; do
        if grep -q -E '^@@(HOSTILE-DONE .*|IDLE-UP|HOSTILE-UNEXPECTED-FAULT .*)@@$' "$log"; then
            echo "@@STAT $name guest_done_cs $(($(now_cs) - t0))@@"
            # The line's newline may still be on its way; after it the guest only halts.
            sleep 1
            break
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            fail "pv-vmm exited before the guest finished"
            break
        fi
        if [ $(($(now_cs) - t0)) -ge 18000 ]; then
            fail "the guest did not finish in 180 s"
            break
        fi
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        api ping ping || fail "vmm.ping"
        api info info || fail "vm.info"
        api counters1 counters || fail "vm.counters"
        sleep 1
        api counters2 counters || fail "vm.counters (second)"
        # CPU time of each vCPU thread over 2 s while the guest halts (USER_HZ ticks): a
        # halted or never-started vCPU must not spin.
        ticks >"$work/ticks0"
        sleep 2
        ticks >"$work/ticks1"
        while read -r comm before; do
            after=$(grep "^$comm " "$work/ticks1" | cut -d' ' -f2)
            echo "@@STAT $name cpu_ticks_$comm $((${after:-0} - before))@@"
        done <"$work/ticks0"
        kill -0 "$pid" 2>/dev/null && alive=1 || alive=0
        echo "@@STAT $name alive $alive@@"
        api shutdown shutdown-vmm || fail "vmm.shutdown"
        t1=$(now_cs)
        while kill -0 "$pid" 2>/dev/null; do
            if [ $(($(now_cs) - t1)) -ge 3000 ]; then
                fail "pv-vmm still running 30 s after vmm.shutdown"
                kill -KILL "$pid"
                break
            fi
            sleep 0.1
        done
    else
        echo "@@STAT $name alive 0@@"
    fi
    wait "$pid"
    echo "@@STAT $name vmm_exit $?@@"
    echo "@@STAT $name host_warnings $(($(host_warnings) - warnings_before))@@"
    [ -e "$sock" ] && fail "socket left behind"
    sed 's/^/L2| /' "$log"
    sed 's/^/VMM| /' "$err"
    echo "@@CASE $name END $result@@"
    [ "$result" = ok ] || status=1
done
rm -rf "$work"
exit $status
