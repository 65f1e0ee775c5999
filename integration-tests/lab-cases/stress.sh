#!/bin/sh
# Runs inside the KVM lab's L1 (busybox sh): the fixed heavy load of scripts/lab/stress.
# Round after round until SECONDS have passed, it starts three VMs at once, two under pv-vmm
# and one under QEMU, VCPUS vCPUs each (on L1's 2 CPUs: the benchmark's overcommit), whose
# guests run WORK seconds of pv-load (tlb-sleep in the first pv-vmm and the QEMU guest, ipi
# in the second pv-vmm guest), and tells how each guest ended.
#
# Usage: stress.sh PV_VMM QEMU KERNEL INITRD SECONDS VCPUS WORK LIMIT
#   (the guest initramfs of scripts/build-guest-initramfs, which carries /bin/pv-load)
#
# Output (stdout), one line per VM (a VM that did not end ok: then its log's last lines,
# prefixed 'L2 <round>.<vm>| '):
#   @@STRESS round=<r> vm=<i> vmm=pv-vmm|qemu result=ok|fault|stall|fail seconds=<s> [why=<text>]@@
#     ok     the guest printed @@GUEST-DONE@@ and its VMM ended cleanly
#     fault  the guest triple-faulted or reset (pv-vmm says so; QEMU, under -no-reboot,
#            ends without the guest's @@GUEST-DONE@@)
#     stall  the guest was not done after LIMIT seconds (scripts/lab/stress --limit): killed
#     fail   anything else (the VMM failed)
#   @@STRESS-END rounds=<n> seconds=<s>@@ when the time is up.
# Exit status 0 when it ran to the end (whatever the guests did), 2 on a usage error.
set -u
[ $# -eq 8 ] || { echo "usage: $0 PV_VMM QEMU KERNEL INITRD SECONDS VCPUS WORK LIMIT" >&2; exit 2; }
pvvmm=$1 qemu=$2 kernel=$3 initrd=$4 total=$5 vcpus=$6 work=$7 limit=$8
. "$(dirname "$0")/common.sh"
for f in "$pvvmm" "$qemu"; do
    [ -x "$f" ] || { echo "stress.sh: $f is not executable" >&2; exit 2; }
done
[ -c /dev/kvm ] || { echo "stress.sh: no /dev/kvm" >&2; exit 2; }
lab_guest=${PV_LAB_GUEST_ARGS:+ $PV_LAB_GUEST_ARGS}
tmp=$(mktemp -d /tmp/stress.XXXXXX)

# start_vm I VMM KIND: starts VM I in the background (pid in vm_pid_I).
start_vm() {
    cmdline="console=ttyS0 quiet panic=-1$lab_guest -- /bin/pv-load $3 $work"
    case $2 in
    pv-vmm)
        "$pvvmm" --kernel "$kernel" --initramfs "$initrd" --cpus "boot=$vcpus" \
            --memory size=384M --serial tty --cmdline "$cmdline" </dev/null >"$tmp/$1.log" 2>&1 &
        ;;
    qemu)
        "$qemu" -nodefaults -no-user-config -enable-kvm -cpu host -smp "$vcpus" -m 384M \
            -kernel "$kernel" -initrd "$initrd" -append "$cmdline" \
            -nographic -serial stdio -monitor none -no-reboot </dev/null >"$tmp/$1.log" 2>&1 &
        ;;
    esac
    eval "vm_pid_$1=\$!"
    eval "vm_vmm_$1=$2"
}

t_start=$(now_cs)
round=0
while [ $(($(now_cs) - t_start)) -lt $((total * 100)) ]; do
    round=$((round + 1))
    t0=$(now_cs)
    start_vm 1 pv-vmm tlb-sleep
    start_vm 2 qemu tlb-sleep
    start_vm 3 pv-vmm ipi
    for i in 1 2 3; do
        eval "pid=\$vm_pid_$i vmm=\$vm_vmm_$i"
        left=$((limit - ($(now_cs) - t0) / 100))
        [ "$left" -gt 0 ] || left=1
        wait_exit "$pid" "$left"
        log=$tmp/$i.log
        why=""
        if [ "$exit_status" = killed ]; then
            result=stall why="not done after ${limit}s"
        elif grep -q "$TRIPLE_FAULT" "$log"; then
            result=fault why=$(grep -m1 "$TRIPLE_FAULT" "$log" | tr -d '\r@' | cut -c1-120)
        elif grep -q '@@GUEST-DONE@@' "$log" && [ "$exit_status" = 0 ]; then
            result=ok
        elif [ "$vmm" = qemu ] && [ "$exit_status" = 0 ]; then
            result=fault why="QEMU ended (-no-reboot) before the guest was done"
        else
            result=fail why="$vmm exited with status $exit_status: $(tail -n1 "$log" | tr -d '\r@' | cut -c1-120)"
        fi
        echo "@@STRESS round=$round vm=$i vmm=$vmm result=$result seconds=$(elapsed_s "$t0")${why:+ why=$why}@@"
        # What the guest and its VMM last said, for the diagnosis.
        # (awk ends every line, also a last one the VM left without a newline.)
        [ "$result" = ok ] || tail -n 12 "$log" | tr -d '\r' | awk -v p="L2 $round.$i| " '{ print p $0 }'
    done
done
echo "@@STRESS-END rounds=$round seconds=$(elapsed_s "$t_start")@@"
rm -rf "$tmp"
exit 0
