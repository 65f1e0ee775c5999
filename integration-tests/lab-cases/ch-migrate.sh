#!/bin/sh
# Runs inside L1 (or directly on a bare-metal runner): the patched Cloud Hypervisor keeps a
# running PV guest's state through vm.snapshot/vm.restore and through a live migration over
# a local Unix socket, all driven by ch-remote, and refuses to restore a snapshot whose PV
# state it cannot give.
#
#   1. Process A boots the guest (pv.tick: busy, printing its steal time every second);
#      the host runs a CPU hog on every CPU so that the vCPUs are preempted and steal time
#      grows. A is paused (counters are read while paused), snapshotted, ended.
#   2. Process B restores the snapshot and resumes it; the guest goes on ticking.
#   3. Process C receives B's VM by send-migration/receive-migration; the guest goes on.
#   4. The snapshot is edited to claim a PV feature Cloud Hypervisor does not back
#      (migration_control); process D must refuse to restore it with one error.
#
# Usage: ch-migrate.sh CLOUD_HYPERVISOR CH_REMOTE KERNEL INITRD CPUS
#
# Output (parsed by integration-tests/tests/lab_ch.rs):
#   @@REC <stage> info <vm.info JSON>@@          stage: booted, restored, migrated
#   @@REC <stage> counters <vm.counters JSON>@@  stage: booted, hog, paused, restored-1,
#                                                restored-2, migrated-1, migrated-2
#   @@STEP <name> ok@@  or  @@STEP <name> fail <why>@@   (the first failure ends the run)
#   @@REFUSED status=<ch-remote's exit status> vmm=<alive|dead>@@ and REFUSE| <its output>
#   L2A| L2B| L2C| <each line of the guest's console under A, B, C>
#   VMMA| VMMB| VMMC| VMMD| <each line each process wrote on stderr>
set -u
. "$(dirname "$0")/common.sh"

[ $# -eq 5 ] || { echo "usage: $0 CLOUD_HYPERVISOR CH_REMOTE KERNEL INITRD CPUS" >&2; exit 2; }
ch=$1 remote=$2 kernel=$3 initrd=$4 cpus=$5
[ -c /dev/kvm ] || { echo "no /dev/kvm" >&2; exit 2; }

ncpu=$(grep -c '^processor' /proc/cpuinfo)
work=$(mktemp -d /tmp/ch-migrate.XXXXXX)
lab_guest=${PV_LAB_GUEST_ARGS:+ $PV_LAB_GUEST_ARGS}
pids=""

finish() {
    status=$1
    hog_stop
    for p in $pids; do kill -KILL "$p" 2>/dev/null; done
    for v in A B C; do
        [ -f "$work/$v.serial" ] && tr -d '\r' <"$work/$v.serial" | sed "s/^/L2$v| /"
    done
    for v in A B C D; do
        [ -f "$work/$v.err" ] && sed "s/^/VMM$v| /" "$work/$v.err"
    done
    rm -rf "$work"
    exit "$status"
}

step_ok() { echo "@@STEP $1 ok@@"; }
step_fail() {
    echo "@@STEP $1 fail $2@@"
    finish 1
}

# start_vmm NAME ARGS...: a Cloud Hypervisor process with its API socket at NAME.sock, its
# serial console (a tty by default) into NAME.serial; waits for its API to answer.
start_vmm() {
    v=$1
    shift
    "$ch" -v --api-socket "path=$work/$v.sock" "$@" </dev/null >"$work/$v.serial" 2>"$work/$v.err" &
    eval "pid_$v=$!"
    pids="$pids $!"
    t0=$(now_cs)
    until "$remote" --api-socket "$work/$v.sock" ping >/dev/null 2>&1; do
        kill -0 "$(eval echo "\$pid_$v")" 2>/dev/null || step_fail "start-$v" "Cloud Hypervisor $v exited"
        [ $(($(now_cs) - t0)) -ge 3000 ] && step_fail "start-$v" "Cloud Hypervisor $v's API did not answer in 30 s"
        sleep 0.2
    done
}

# remote_ok STEP NAME ARGS...: ch-remote ARGS against NAME's socket; fails STEP with its
# output unless it exits 0.
remote_ok() {
    s=$1 v=$2
    shift 2
    if ! out=$("$remote" --api-socket "$work/$v.sock" "$@" 2>&1); then
        step_fail "$s" "ch-remote $*: $(echo "$out" | tr '\n' ' ')"
    fi
}

rec() { echo "@@REC $1 $2 $("$remote" --api-socket "$work/$3.sock" "$2" 2>&1 | tr -d '\n')@@"; }

# ticks NAME COUNT SECONDS: until the guest under NAME printed COUNT ticks.
ticks() {
    r=$(wait_log "$work/$1.serial" '@@GUEST-TICK ' "$2" "$3" "$(eval echo "\$pid_$1")") ||
        step_fail "ticks-$1" "$r"
}

# 1. Boot under A, with steal time growing.
start_vmm A --console off --kernel "$kernel" --initramfs "$initrd" --cpus "$cpus" \
    --memory size=512M --serial tty --cmdline "console=ttyS0 quiet panic=-1$lab_guest pv.tick=100000"
ticks A 3 300
step_ok boot
rec booted info A
rec booted counters A
hog_start
sleep 4
rec hog counters A
remote_ok pause A pause
step_ok pause
rec paused counters A
mkdir -p "$work/snap"
remote_ok snapshot A snapshot "file://$work/snap"
step_ok snapshot
remote_ok shutdown-A A shutdown-vmm
wait_exit "$pid_A" 30
[ "$exit_status" = killed ] && step_fail shutdown-A "Cloud Hypervisor A still running 30 s after shutdown-vmm"
cp "$work/snap/state.json" "$work/state.json.orig"
# The guest stays stopped longer than its soft-lockup threshold (2 x watchdog_thresh, 20 s):
# a restore that does not tell its kvmclock it was stopped shows in its log as "BUG: soft
# lockup", which fails the test (CI saw it on 2026-12-05 after a 23 s gap).
sleep 25

# 2. Restore under B.
start_vmm B
remote_ok restore B restore "source_url=file://$work/snap"
remote_ok resume B resume
step_ok restore
ticks B 2 120
rec restored-1 counters B
sleep 4
rec restored-2 counters B
rec restored info B

# 3. Migrate from B to C.
start_vmm C
"$remote" --api-socket "$work/C.sock" receive-migration "receiver_url=unix:$work/mig.sock" >"$work/receive.out" 2>&1 &
receiver=$!
t0=$(now_cs)
until [ -S "$work/mig.sock" ]; do
    kill -0 "$receiver" 2>/dev/null || step_fail receive-migration "$(tr '\n' ' ' <"$work/receive.out")"
    [ $(($(now_cs) - t0)) -ge 3000 ] && step_fail receive-migration "no migration socket after 30 s"
    sleep 0.2
done
remote_ok send-migration B send-migration "destination_url=unix:$work/mig.sock"
wait "$receiver" || step_fail receive-migration "$(tr '\n' ' ' <"$work/receive.out")"
step_ok migrate
ticks C 2 120
rec migrated-1 counters C
sleep 4
rec migrated-2 counters C
rec migrated info C
hog_stop

# 4. A snapshot claiming a feature Cloud Hypervisor does not back is refused.
sed 's/\\"effective\\":{\\"leaves\\":true,\\"features\\":\[/&\\"migration_control\\",/' \
    "$work/state.json.orig" >"$work/snap/state.json"
cmp -s "$work/state.json.orig" "$work/snap/state.json" &&
    step_fail edit-snapshot "no KVM PV state found in the snapshot's state.json"
start_vmm D
out=$("$remote" --api-socket "$work/D.sock" restore "source_url=file://$work/snap" 2>&1)
status=$?
alive=dead
kill -0 "$pid_D" 2>/dev/null && alive=alive
echo "@@REFUSED status=$status vmm=$alive@@"
printf '%s\n' "$out" | sed 's/^/REFUSE| /'
step_ok refuse
finish 0
