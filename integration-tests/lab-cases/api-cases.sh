#!/bin/sh
# Runs inside L1 (or directly on a bare-metal runner): drives pv-vmm through its REST API
# with pv-remote. pv-vmm starts with only --api-socket; the VM (4 vCPUs, the guest's shell
# on its serial console) is created and booted through the API; then halt polling is
# changed live, `dedicated` is set (pending), a load test runs, the VM is paused and
# resumed, rebooted through the API, and the VMM is shut down through the API.
#
# Usage: api-cases.sh PV_VMM PV_REMOTE KERNEL INITRD [LOAD_REQUESTS]
#
# Output (parsed by integration-tests/tests/lab_api.rs):
#   @@API <step> <status> <one line of JSON or text>@@   pv-remote's answer per step
#   @@MARK <name>@@                                        a point reached
#   L2| <each line of the guest's console>
#   VMM| <each line pv-vmm wrote on stderr>
#   @@LAB-FAULT <line>@@   when the run failed and the guest's console or pv-vmm's stderr
#                          says the lab took the guest away (common.sh's LAB_FAULT)
#   @@END ok@@ or @@END fail <reason>@@
set -u
[ $# -ge 4 ] || { echo "usage: $0 PV_VMM PV_REMOTE KERNEL INITRD [LOAD_REQUESTS]" >&2; exit 2; }
vmm=$1 remote=$2 kernel=$3 initrd=$4 load_requests=${5:-1000}
[ -c /dev/kvm ] || { echo "no /dev/kvm" >&2; exit 2; }
. "$(dirname "$0")/common.sh"

work=$(mktemp -d /tmp/api-cases.XXXXXX)
sock=$work/api.sock log=$work/serial.log err=$work/vmm.err fifo=$work/console
mkfifo "$fifo"
# Keep the console fifo open for writing, so pv-vmm's stdin never sees EOF.
exec 3<>"$fifo"

result=ok
fail() { [ "$result" = ok ] && result="fail $*"; echo "@@MARK fail $*@@"; }

# api STEP ARGS...: runs pv-remote, prints its answer on one line.
api() {
    step=$1; shift
    out=$("$remote" --api-socket "$sock" "$@" 2>"$work/remote.err"); rc=$?
    [ $rc -ne 0 ] && out=$(cat "$work/remote.err")
    echo "@@API $step $rc $(echo "$out" | tr -d '\n')@@"
    return $rc
}

# wait_for PATTERN COUNT SECONDS: until the serial log has COUNT lines matching PATTERN.
wait_for() {
    t0=$(now_cs)
    while [ "$(tr -d '\r' <"$log" | grep -c "$1")" -lt "$2" ]; do
        kill -0 "$pid" 2>/dev/null || { fail "pv-vmm exited while waiting for '$1'"; return 1; }
        [ $(($(now_cs) - t0)) -ge $(($3 * 100)) ] && { fail "no '$1' x$2 after $3 s"; return 1; }
        sleep 0.2
    done
}

"$vmm" -v --api-socket "path=$sock" <"$fifo" >"$log" 2>"$err" &
pid=$!
t0=$(now_cs)
while [ ! -S "$sock" ]; do
    [ $(($(now_cs) - t0)) -ge 1000 ] && { fail "no API socket"; break; }
    sleep 0.1
done
echo "@@MARK socket-mode $(stat -c %a "$sock")@@"

# The lab's words for every guest (scripts/lab/lib.sh; none on bare metal).
lab_guest=${PV_LAB_GUEST_ARGS:+ $PV_LAB_GUEST_ARGS}

cat >"$work/vm.json" <<JSON
{"cpus":{"boot_vcpus":4,"max_vcpus":4},"memory":{"size":536870912},
 "payload":{"kernel":"$kernel","initramfs":"$initrd","cmdline":"console=ttyS0 quiet panic=-1$lab_guest pv.shell"},
 "serial":{"mode":"Tty"}}
JSON

# The steps that need the running guest; the first missing guest ends them.
steps() {
api ping ping
api create create "$work/vm.json" || { fail create; return; }
api boot boot || { fail boot; return; }
wait_for 'pv.shell: a shell' 1 150 || return
echo "@@MARK booted@@"

# Short sleeps on every vCPU make short halts; with a 10 ms limit KVM polls before
# sleeping (halt_attempted_poll grows); with 0 it must stop polling.
echo 'for i in 1 2 3 4; do (while [ ! -e /pv-stop ]; do usleep 300; done) & done; echo LOOPS-$((1+1))' >&3
wait_for 'LOOPS-2' 1 60 || return
api pv_halt10ms pv --halt-poll-ns 10000000 || fail "pv --halt-poll-ns 10000000"
sleep 1
api counters0 counters
sleep 3
api counters1 counters
api pv_halt0 pv --halt-poll-ns 0 || fail "pv --halt-poll-ns 0"
api info_halt0 info
sleep 1
api counters2 counters
sleep 3
api counters3 counters
# Stop the loops: the load below is enough work for the emulated L1.
echo 'touch /pv-stop; echo STOPPED-$((2+2))' >&3
wait_for 'STOPPED-4' 1 60 || return
api pv_dedicated pv --dedicated on || fail "pv --dedicated on"
api info_pending info
# Bad input while running: 4xx, the VM keeps running.
api bad_combo pv --kvm-pv pv_tlb_flush && fail "pv_tlb_flush without steal_time accepted"
api bad_state resume && fail "resume of a running VM accepted"

api load load --clients 8 --requests "$load_requests" || fail "load test"
echo 'echo ALIVE-$((6*7))' >&3
wait_for 'ALIVE-42' 1 60 || return
echo "@@MARK console-after-load@@"

api pause pause || fail pause
api info_paused info
api counters_paused counters
api resume resume || fail resume
echo 'echo RESUMED-$((6*7))' >&3
wait_for 'RESUMED-42' 1 60 || return
echo "@@MARK console-after-resume@@"

api reboot reboot || fail reboot
wait_for 'pv.shell: a shell' 2 150 || return
echo "@@MARK rebooted@@"
api info_rebooted info
api counters_rebooted counters
}
steps

if kill -0 "$pid" 2>/dev/null; then
    api shutdown_vmm shutdown-vmm || fail shutdown-vmm
fi
t0=$(now_cs)
while kill -0 "$pid" 2>/dev/null; do
    [ $(($(now_cs) - t0)) -ge 1000 ] && { fail "pv-vmm still running after vmm.shutdown"; kill -KILL "$pid"; break; }
    sleep 0.1
done
wait "$pid"; echo "@@MARK vmm-exit $?@@"
[ -e "$sock" ] && fail "socket left behind"

tr -d '\r' <"$log" | sed 's/^/L2| /'
sed 's/^/VMM| /' "$err"
if [ "$result" != ok ]; then
    fault=$(lab_fault_in "$log" "$err")
    [ -n "$fault" ] && echo "@@LAB-FAULT $(printf '%s' "$fault" | tr -d '@')@@"
fi
echo "@@END $result@@"
exec 3>&-
rm -rf "$work"
[ "$result" = ok ]
