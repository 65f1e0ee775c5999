#!/bin/sh
# Runs inside the KVM lab's L1 (busybox sh) or directly on a bare-metal host (any POSIX sh):
# boots the same kernel and initramfs under pv-vmm and under QEMU, interleaved (pv-vmm,
# QEMU, pv-vmm, QEMU, ...), each run measured by scripts/bench-lib/measure.c. Started by
# scripts/bench-boot through scripts/lab/run.
#
# Usage: boot-in-l1.sh MEASURE PV_VMM QEMU KERNEL INITRD RUNS TIMEOUT
#   TIMEOUT  per boot, in seconds (measure kills the VMM and reports a failure after it)
#
# Output (stdout, parsed by scripts/bench-boot):
#   @@INFO <key>=<value>@@                 context (where it ran, versions)
#   @@RUN vmm=<pv-vmm|qemu> run=<i> result=ok|fail ...@@   one per boot, from measure
#   @@LOG <vmm> <i> BEGIN@@, 'L2| ' + each line of that boot's output (stdout and stderr of
#   the VMM, at most 64 KiB), @@LOG <vmm> <i> END@@
# Exit status: 0 when every run succeeded, 1 otherwise, 2 on a usage or setup error.
set -u

[ $# -eq 7 ] || { echo "usage: $0 MEASURE PV_VMM QEMU KERNEL INITRD RUNS TIMEOUT" >&2; exit 2; }
measure=$1 pvvmm=$2 qemu=$3 kernel=$4 initrd=$5 runs=$6 limit=$7

for f in "$measure" "$pvvmm" "$qemu"; do
    [ -x "$f" ] || { echo "boot-in-l1: $f is not executable" >&2; exit 2; }
done
for f in "$kernel" "$initrd"; do
    [ -r "$f" ] || { echo "boot-in-l1: cannot read $f" >&2; exit 2; }
done
[ -c /dev/kvm ] || { echo "boot-in-l1: no /dev/kvm" >&2; exit 2; }

# The lab's words for every guest (scripts/lab/lib.sh; none on bare metal).
lab_guest=${PV_LAB_GUEST_ARGS:+ $PV_LAB_GUEST_ARGS}
cmdline="console=ttyS0 quiet$lab_guest"
echo "@@INFO inside_lab=${PV_LAB_INSIDE:-0}@@"
echo "@@INFO kernel_release=$(uname -r)@@"
echo "@@INFO cpus=$(grep -c '^processor' /proc/cpuinfo)@@"
echo "@@INFO kvm_module=$(cut -d' ' -f1 /proc/modules 2>/dev/null | grep -E '^kvm_(amd|intel)$' | head -n1)@@"
echo "@@INFO mem_total_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)@@"
echo "@@INFO qemu_version=$("$qemu" -version 2>/dev/null | head -n1 | tr -d '@')@@"
echo "@@INFO pv_vmm_version=$("$pvvmm" --version 2>/dev/null | head -n1 | tr -d '@')@@"

work=$(mktemp -d /tmp/bench-boot.XXXXXX) || exit 2
status=0

# one VMM RUN: measure it, then print its log.
one() {
    vmm=$1 i=$2
    shift 2
    log=$work/$vmm-$i.log
    "$measure" --label "$vmm" --run "$i" --timeout "$limit" --log "$log" -- "$@" || status=1
    echo "@@LOG $vmm $i BEGIN@@"
    head -c 65536 "$log" | tr -d '\r' | awk '{ print "L2| " $0 }'
    echo "@@LOG $vmm $i END@@"
}

# BOOT_CH / BOOT_CH_UPSTREAM (environment): the patched Cloud Hypervisor and the same
# commit unpatched, booted in the same rounds.
ch_boot() {
    one "$1" "$i" "$2" --kernel "$kernel" --initramfs "$initrd" --cpus boot=2 \
        --memory size=512M --serial tty --console off --cmdline "$cmdline"
}

i=1
while [ "$i" -le "$runs" ]; do
    one pv-vmm "$i" "$pvvmm" --kernel "$kernel" --initramfs "$initrd" --cpus boot=2 \
        --memory size=512M --serial tty --cmdline "$cmdline"
    one qemu "$i" "$qemu" -nodefaults -no-user-config -enable-kvm -cpu host -smp 2 -m 512M \
        -kernel "$kernel" -initrd "$initrd" -append "$cmdline" \
        -nographic -serial stdio -monitor none -no-reboot
    [ -n "${BOOT_CH:-}" ] && ch_boot ch "$BOOT_CH"
    [ -n "${BOOT_CH_UPSTREAM:-}" ] && ch_boot ch-upstream "$BOOT_CH_UPSTREAM"
    i=$((i + 1))
done
rm -rf "$work"
exit $status
