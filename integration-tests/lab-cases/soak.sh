#!/bin/sh
# Runs inside L1 (or directly on a bare-metal runner): one pv-vmm process, a guest that
# reboots itself REBOOTS times (pv.reboot on its command line: it comes up, prints
# @@GUEST-UP and runs `reboot -f`, and pv-vmm recreates the VM), and meanwhile CLIENTS x
# REQUESTS API requests (pv-remote load: vm.info, vm.counters, vm.pv). Prints pv-vmm's open
# file descriptors and resident memory (all, the guest RAM's part, and pv-vmm's own) after
# the first reboot and at the end, each with the VM paused and no client connected, and
# after every tenth reboot (running, with the load's connections).
#
# Usage: soak.sh PV_VMM PV_REMOTE KERNEL INITRD REBOOTS CLIENTS REQUESTS TIMEOUT
#   INITRD '-' for none. With SOAK_REBOOT_BY=api the VM is rebooted through vm.reboot
#   each time the guest is up instead (for a guest that does not reboot itself, such as
#   the raw PVH idle guest); SOAK_UP_MARK is the console line that says the guest is up
#   (default @@GUEST-UP) and SOAK_CMDLINE its command line.
#
# Output (parsed by scripts/soak):
#   @@SOAK <label> boots=<n> fds=<open fds> rss_kb=<VmRSS> guest_kb=<guest RAM resident>
#          own_kb=<VmRSS - guest_kb> threads=<n>@@
#   @@LOAD <pv-remote load's JSON answer>@@
#   @@END ok@@ or @@END fail <reason>@@
set -u
[ $# -eq 8 ] || { echo "usage: $0 PV_VMM PV_REMOTE KERNEL INITRD REBOOTS CLIENTS REQUESTS TIMEOUT" >&2; exit 2; }
vmm=$1 remote=$2 kernel=$3 initrd=$4 reboots=$5 clients=$6 requests=$7 limit=$8
[ -c /dev/kvm ] || { echo "no /dev/kvm" >&2; exit 2; }

work=$(mktemp -d /tmp/soak.XXXXXX)
sock=$work/api.sock log=$work/serial.log err=$work/vmm.err
now_cs() { read -r up _ </proc/uptime; echo "${up%.*}${up#*.}" | sed 's/^0*//;s/^$/0/'; }
by=${SOAK_REBOOT_BY:-guest}
mark=${SOAK_UP_MARK:-@@GUEST-UP}
# The lab's words for every guest (scripts/lab/lib.sh; none on bare metal).
lab_guest=${PV_LAB_GUEST_ARGS:+ $PV_LAB_GUEST_ARGS}
cmdline=${SOAK_CMDLINE:-console=ttyS0 quiet panic=-1$lab_guest pv.reboot}
boots() {
    n=$(grep -c "$mark" "$log" 2>/dev/null)
    echo "${n:-0}"
}
sample() {
    fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
    rss=$(awk '$1 == "VmRSS:" {print $2}' "/proc/$pid/status" 2>/dev/null)
    threads=$(awk '$1 == "Threads:" {print $2}' "/proc/$pid/status" 2>/dev/null)
    # Guest RAM is the one mapping of 256 MiB or more (the kernel may merge a neighbouring
    # anonymous mapping into it): its resident part is the guest's, the rest is pv-vmm's
    # own (heap, stacks, code).
    guest=$(awk '/^[0-9a-f]+-[0-9a-f]+ / {inmap = 0}
        $1 == "Size:" && $2 >= 262144 {inmap = 1}
        inmap && $1 == "Rss:" {print $2; exit}' "/proc/$pid/smaps" 2>/dev/null)
    own=""
    [ -n "$rss" ] && [ -n "$guest" ] && own=$((rss - guest))
    echo "@@SOAK $1 boots=$(boots) fds=$fds rss_kb=${rss:-?} guest_kb=${guest:-?} own_kb=${own:-?} threads=${threads:-?}@@"
}
# paused_sample LABEL: pauses the VM so that its descriptors and memory hold still (no
# reboot half done, no client connected), samples, and resumes it.
paused_sample() {
    "$remote" --api-socket "$sock" pause >/dev/null || { fail "pause for $1"; return; }
    # pv-remote has closed its connection; give the server a moment to close its end.
    sleep 1
    sample "$1"
    "$remote" --api-socket "$sock" resume >/dev/null || fail "resume after $1"
}
result=ok
fail() { [ "$result" = ok ] && result="fail $*"; }

"$vmm" -v --api-socket "path=$sock" </dev/null >"$log" 2>"$err" &
pid=$!
t0=$(now_cs)
while [ ! -S "$sock" ]; do
    [ $(($(now_cs) - t0)) -ge 1000 ] && { fail "no API socket"; break; }
    sleep 0.1
done
initramfs=""
[ "$initrd" = - ] || initramfs=",\"initramfs\":\"$initrd\""
cat >"$work/vm.json" <<JSON
{"cpus":{"boot_vcpus":2,"max_vcpus":2},"memory":{"size":268435456},
 "payload":{"kernel":"$kernel"$initramfs,"cmdline":"$cmdline"},
 "serial":{"mode":"Tty"}}
JSON
# api_reboot: with SOAK_REBOOT_BY=api, reboots the VM once the guest came up again.
asked=0
api_reboot() {
    [ "$by" = api ] || return 0
    up=$(boots)
    [ "$up" -gt "$asked" ] || return 0
    asked=$up
    "$remote" --api-socket "$sock" reboot >/dev/null || fail "vm.reboot after boot $up"
}
sample before-create
"$remote" --api-socket "$sock" create "$work/vm.json" >/dev/null || fail create
"$remote" --api-socket "$sock" boot >/dev/null || fail boot

# Wait for the first reboot (the second boot) before the baseline sample.
t0=$(now_cs)
while [ "$result" = ok ] && [ "$(boots)" -lt 2 ]; do
    kill -0 "$pid" 2>/dev/null || { fail "pv-vmm exited before the first reboot"; break; }
    [ $(($(now_cs) - t0)) -ge $((limit * 100)) ] && { fail "no first reboot after ${limit}s"; break; }
    api_reboot
    sleep 0.2
done
paused_sample first-reboot

"$remote" --api-socket "$sock" load --clients "$clients" --requests "$requests" \
    >"$work/load.json" 2>"$work/load.err" &
load_pid=$!

next=10
while [ "$result" = ok ] && [ "$(boots)" -le "$reboots" ]; do
    kill -0 "$pid" 2>/dev/null || { fail "pv-vmm exited after $(boots) boots"; break; }
    [ $(($(now_cs) - t0)) -ge $((limit * 100)) ] && { fail "$(boots) boots after ${limit}s"; break; }
    if [ "$(($(boots) - 1))" -ge "$next" ]; then
        sample "reboots-$next"
        next=$((next + 10))
    fi
    api_reboot
    sleep 0.2
done
wait "$load_pid" || fail "the load client failed: $(cat "$work/load.err")"
echo "@@LOAD $(tr -d '\n' <"$work/load.json")@@"
paused_sample end

"$remote" --api-socket "$sock" shutdown-vmm >/dev/null || fail shutdown-vmm
wait "$pid"; code=$?
[ "$code" -eq 0 ] || fail "pv-vmm exited with $code"
grep 'seccomp\|ERROR\|WARN' "$err" | head -5 | sed 's/^/VMM| /'
echo "@@SOAK guest-boots $(boots)@@"
echo "@@END $result@@"
rm -rf "$work"
[ "$result" = ok ]
