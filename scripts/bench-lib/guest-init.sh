#!/bin/sh
# The guest's /init for scripts/bench (built into an initramfs by
# scripts/build-guest-initramfs --init): boots, reports what the guest sees of KVM, then
# runs the benchmark's workloads (/bin/pv-load) one after the other, each started by the
# host so that the host can read its KVM counters right before and right after it.
#
# Kernel command line switches it reads:
#   pv.bench=KIND[,KIND...]  the pv-load workloads to run, in order (ipi, tlb, tlb-sleep,
#                            ebizzy, pingpong)
#   pv.secs=S                seconds per workload (default 3)
#
# Protocol on the console (ttyS0), one line each:
#   @@GUEST-UP <uptime>@@, the 'kvm-guest:' lines, @@GUEST-CPUS <n>@@, cpuid-kvm's lines,
#   @@GUEST-INFO <key>=<value>@@ (clock event device, broadcast device, cpuidle driver,
#   APIC routing, CPUs with the TSC deadline timer)
#   @@BENCH-READY <kind>@@   then it waits for a line 'go' on the console (the host reads
#                            the counters, then writes 'go'); any other line skips <kind>
#   @@IRQ <kind> before|after <name> <count>@@   interrupts received, per kind, around it
#   @@WORK kind=<kind> ops=...@@   pv-load's result
#   @@BENCH-DONE <kind> <pv-load's exit status>@@
#   @@BENCH-READY end@@      after the last workload: it waits for one more line (so that
#                            the host reads the last counters while the VM still exists)
#   @@GUEST-DONE@@           then 'poweroff -f'
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
echo "@@GUEST-UP $(cut -d' ' -f1 /proc/uptime)@@"
dmesg | grep -E 'kvm-guest:|Hypervisor detected|clocksource: Switched'
echo "@@GUEST-CPUS $(grep -c '^processor' /proc/cpuinfo)@@"
[ -x /bin/cpuid-kvm ] && /bin/cpuid-kvm
# How the guest keeps time and idles: these decide which exits and IPIs a workload causes.
echo "@@GUEST-INFO clockevent=$(cat /sys/devices/system/clockevents/clockevent0/current_device 2>/dev/null)@@"
echo "@@GUEST-INFO broadcast=$(cat /sys/devices/system/clockevents/broadcast/current_device 2>/dev/null)@@"
echo "@@GUEST-INFO cpuidle=$(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null)@@"
echo "@@GUEST-INFO apic=$(dmesg | sed -n 's/.*Switched APIC routing to \(.*\)\.$/\1/p' | head -n1)@@"
echo "@@GUEST-INFO tsc_deadline=$(grep -c -w tsc_deadline_timer /proc/cpuinfo)@@"

kinds="" secs=3
# shellcheck disable=SC2013 # the command line's words are what we want
for word in $(cat /proc/cmdline); do
    case "$word" in
    pv.bench=*) kinds=$(echo "${word#pv.bench=}" | tr ',' ' ') ;;
    pv.secs=*) secs=${word#pv.secs=} ;;
    esac
done
# The interrupts this guest received, by kind (LOC timer, RES reschedule, CAL function call,
# TLB shootdown, ...), summed over its CPUs: '@@IRQ <kind> <before|after> <name> <n>@@'.
irqs() {
    awk -v k="$1" -v w="$2" '$1 ~ /^[A-Z][A-Z][A-Z]:$/ {
        s = 0
        for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i
        printf "@@IRQ %s %s %s %d@@\n", k, w, substr($1, 1, 3), s
    }' /proc/interrupts
}
# No echo of the host's 'go' lines into the log, no line editing surprises.
stty -echo 2>/dev/null
for kind in $kinds; do
    echo "@@BENCH-READY $kind@@"
    read -r answer || answer=""
    if [ "$answer" != go ]; then
        echo "@@BENCH-SKIP $kind host answered '$answer'@@"
        continue
    fi
    irqs "$kind" before
    /bin/pv-load "$kind" "$secs"
    rc=$?
    irqs "$kind" after
    echo "@@BENCH-DONE $kind $rc@@"
done
echo "@@BENCH-READY end@@"
read -r answer
echo "@@GUEST-DONE@@"
poweroff -f
