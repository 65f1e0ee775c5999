#!/bin/sh
# Runs inside L1 (or directly on a bare-metal runner): one pv-vmm per case, each with its
# API socket and the guest's shell on the serial console (pv.shell). For each case the
# guest's boot output (its CPUID dump, its kvm-guest lines), pv-vmm's vm.info, and for each
# workload the VM's vm.counters before and after, the guest's /proc/stat before and after,
# the workload's own result line and (where tracefs has the event) how many TLB flushes KVM
# did because the guest asked for them in the steal-time record.
#
# Usage: feature-cases.sh PV_VMM PV_REMOTE KERNEL INITRD TIMEOUT CASE...
#   PV_VMM/PV_REMOTE may be another VMM with the same options and its client (the patched
#   cloud-hypervisor and ch-remote); VMM_ARGS (environment) are words it needs before the
#   others (Cloud Hypervisor: '--console off', its console being a tty by default). With
#   UNIX_CONSOLE=<path of integration-tests/guest/unix-console> (a VMM that takes serial
#   input from a terminal only, as Cloud Hypervisor does): the VMM gets '--serial
#   socket=<dir>/serial.sock' instead of '--serial tty', and the helper carries the guest's
#   console between that socket and the case (its shell's input, the log).
#   TRACEFS=off leaves the host's tracing alone (the host-side tests of this script).
#   CASE is four words: NAME CPUS HOG WORK
#   NAME  a label
#   CPUS  the --cpus value; OVER is replaced by twice this host's CPU count (at least 4,
#         for a multicast with several destinations; at most 16), HOSTCPUS by this host's
#         CPU count
#   HOG   0, or 'host': one busy loop per host CPU while the workloads run
#   WORK  '-' (boot, report, power off), a comma list of KIND:SECONDS for /bin/pv-load in
#         the guest (e.g. ipi:3,tlb:3), or 'refuse' (pv-vmm must refuse the configuration
#         before any guest starts: no API, no guest, its status and message are the result)
# Cases without workloads and without a hog run in parallel, as many at a time as the host
# has CPUs; the others run alone.
#
# Output (parsed by integration-tests, see integration_tests::peer):
#   @@HOST cpus=<n> over=<n> tracefs=<yes|no> kernel=<release>@@
#   @@RETRY <name> <pv-vmm's error>@@   (before a case run again after the lab lost its
#                                        guest, see retry_lab_fault in common.sh)
#   @@CASE <name> BEGIN <cpus>@@
#   @@REC <name> info - <vm.info JSON>@@
#   @@REC <name> counters <kind>-before|<kind>-after <vm.counters JSON>@@
#   @@REC <name> pv_tlb_flush_requested <kind> <count>@@    (with tracefs only)
#   @@REC <name> hypercall_nrs <kind> <nr>:<count>... overrun:<lost events>@@  (tracefs)
#   @@REC <name> send_ipi_icr <kind> <icr>:<count>... overrun:<lost events>@@   (tracefs)
#   @@REC <name> icr_writes <kind> <vector>:<count>... overrun:<lost events>@@  (tracefs)
#   L2| <each line of the guest's console>
#   VMM| <each line pv-vmm wrote on stderr>
#   @@STAT <name> vmm_exit <pv-vmm's exit status>@@
#   @@CASE <name> BOOT <seconds from pv-vmm's start to its exit>@@
#   @@CASE <name> END ok@@  or  @@CASE <name> END fail <reason>@@
set -u
. "$(dirname "$0")/common.sh"

[ $# -ge 9 ] || { echo "usage: $0 PV_VMM PV_REMOTE KERNEL INITRD TIMEOUT NAME CPUS HOG WORK..." >&2; exit 2; }
vmm=$1 remote=$2 kernel=$3 initrd=$4 limit=$5
shift 5
[ -c /dev/kvm ] || { echo "no /dev/kvm" >&2; exit 2; }

ncpu=$(grep -c '^processor' /proc/cpuinfo)
over=$((2 * ncpu))
[ "$over" -lt 4 ] && over=4
[ "$over" -gt 16 ] && over=16

# tracefs, where the host has it, counts what the KVM statistics cannot tell apart:
# kvm_pv_tlb_flush fires each time KVM updates a vCPU's steal-time record, and with
# need_flush_tlb true it is a flush the guest requested there instead of sending an IPI;
# kvm_hypercall carries the hypercall number (5 KICK_CPU, 10 SEND_IPI, 11 SCHED_YIELD);
# kvm_msr, filtered to the x2APIC ICR (0x830), counts the IPIs sent by MSR write, by vector.
trace=/sys/kernel/tracing
[ -d "$trace/events" ] || mount -t tracefs nodev "$trace" 2>/dev/null
flush_event=$trace/events/kvm/kvm_pv_tlb_flush
hc_event=$trace/events/kvm/kvm_hypercall
msr_event=$trace/events/kvm/kvm_msr
if [ "${TRACEFS:-}" != off ] && [ -w "$flush_event/enable" ] && [ -w "$hc_event/enable" ] && [ -w "$msr_event/enable" ]; then
    tracefs=yes
    old_buffer_kb=$(sed 's/ .*//' "$trace/buffer_size_kb")
    echo 8192 >"$trace/buffer_size_kb"
    echo 'need_flush_tlb==1' >"$flush_event/filter"
    echo 'ecx==0x830' >"$msr_event/filter"
else
    tracefs=no
fi
echo "@@HOST cpus=$ncpu over=$over tracefs=$tracefs kernel=$(uname -r)@@"

work=$(mktemp -d /tmp/feature-cases.XXXXXX)

trace_start() {
    [ $tracefs = yes ] || return 0
    echo 0 >"$trace/tracing_on"
    echo >"$trace/trace"
    echo 1 >"$flush_event/enable"
    echo 1 >"$hc_event/enable"
    echo 1 >"$msr_event/enable"
    echo 1 >"$trace/tracing_on"
}

# trace_count CASE KIND: the records of what tracefs saw during the workload; events lost
# to a full buffer are reported (overrun), so a count is never silently short.
trace_count() {
    [ $tracefs = yes ] || return 0
    echo 0 >"$trace/tracing_on"
    echo 0 >"$flush_event/enable"
    echo 0 >"$hc_event/enable"
    echo 0 >"$msr_event/enable"
    echo "@@REC $1 pv_tlb_flush_requested $2 $(grep -c 'need_flush_tlb true' "$trace/trace")@@"
    nrs=$(grep -o 'kvm_hypercall: nr 0x[0-9a-f]*' "$trace/trace" | sed 's/.* nr //' | sort | uniq -c |
        awk '{printf "%s:%s ", $2, $1}')
    lost=$(cat "$trace"/per_cpu/cpu*/stats | awk '/^overrun:/ {n += $2} END {print n + 0}')
    echo "@@REC $1 hypercall_nrs $2 ${nrs}overrun:$lost@@"
    # SEND_IPI's fourth argument is the ICR low word: its low byte is the vector.
    icrs=$(grep -o 'kvm_hypercall: nr 0xa a0 .* a3 0x[0-9a-f]*' "$trace/trace" | sed 's/.* a3 //' |
        sort | uniq -c | awk '{printf "%s:%s ", $2, $1}')
    echo "@@REC $1 send_ipi_icr $2 ${icrs}overrun:$lost@@"
    # x2APIC ICR writes, by vector (the low byte of the value written).
    vecs=$(grep -o 'msr_write 830 = 0x[0-9a-f]*' "$trace/trace" | sed 's/.*\(..\)$/0x\1/' |
        sort | uniq -c | awk '{printf "%s:%s ", $2, $1}')
    echo "@@REC $1 icr_writes $2 ${vecs}overrun:$lost@@"
}

# The lab's words for every guest (scripts/lab/lib.sh; none on bare metal).
lab_guest=${PV_LAB_GUEST_ARGS:+ $PV_LAB_GUEST_ARGS}

guest_ready='pv.shell: a shell'

# run_case NAME CPUS HOG WORK: one case, its whole output on stdout.
run_case() {
    name=$1 cpus=$2 hog=$3 jobs=$4
    dir=$work/$name
    # Each attempt starts bare: a retry (retry_lab_fault) must not meet the last attempt's
    # serial socket (Cloud Hypervisor refuses to bind it: "Address already in use"), fifo
    # or logs.
    rm -rf "$dir"
    mkdir -p "$dir"
    log=$dir/serial.log err=$dir/vmm.err sock=$dir/api.sock
    : >"$log"
    echo "@@CASE $name BEGIN $cpus@@"
    t0=$(now_cs)
    result=""
    if [ "$jobs" = refuse ]; then
        # shellcheck disable=SC2086 # VMM_ARGS is words
        "$vmm" ${VMM_ARGS:-} --kernel "$kernel" --initramfs "$initrd" --cpus "$cpus" --memory size=512M \
            --serial tty --cmdline "console=ttyS0 quiet panic=-1$lab_guest" </dev/null >"$log" 2>"$err" &
        pid=$!
        wait_exit "$pid" 30
    else
        mkfifo "$dir/console"
        exec 3<>"$dir/console"
        # The guest's shell reads what the case writes to fd 3; its console goes to $log:
        # through the VMM's stdin and stdout, or through its serial socket and unix-console.
        serial=tty console_in=$dir/console console_out=$log
        if [ -n "${UNIX_CONSOLE:-}" ]; then
            serial=socket=$dir/serial.sock console_in=/dev/null console_out=$dir/vmm.out
        fi
        # shellcheck disable=SC2086 # VMM_ARGS is words
        "$vmm" ${VMM_ARGS:-} -v --api-socket "path=$sock" --kernel "$kernel" --initramfs "$initrd" \
            --cpus "$cpus" --memory size=512M --serial "$serial" \
            --cmdline "console=ttyS0 quiet panic=-1$lab_guest pv.shell" <"$console_in" >"$console_out" 2>"$err" &
        pid=$!
        if [ -n "${UNIX_CONSOLE:-}" ]; then
            "$UNIX_CONSOLE" "$dir/serial.sock" 60 <"$dir/console" >"$log" 2>>"$err" &
        fi
        if ! result=$(wait_log "$log" "$guest_ready" 1 "$limit" "$pid"); then
            result="fail $result"
        fi
        if [ -z "$result" ]; then
            echo "@@REC $name info - $("$remote" --api-socket "$sock" info 2>&1 | tr -d '\n')@@"
            [ "$hog" = host ] && hog_start
            n=0
            for job in $(echo "$jobs" | tr ',' ' '); do
                [ "$job" = - ] && continue
                kind=${job%%:*} secs=${job#*:}
                n=$((n + 1))
                trace_start
                echo "@@REC $name counters $kind-before $("$remote" --api-socket "$sock" counters 2>&1 | tr -d '\n')@@"
                # The quotes inside the markers keep the shell's echo of this line from
                # matching them.
                echo "echo @@''GSTAT $kind before \$(grep '^cpu ' /proc/stat)@@;" \
                    "pv-load $kind $secs;" \
                    "echo @@''GSTAT $kind after \$(grep '^cpu ' /proc/stat)@@;" \
                    "echo WORK''-DONE-$n" >&3
                if ! r=$(wait_log "$log" "^WORK-DONE-$n\$" 1 $((secs * 4 + 60)) "$pid"); then
                    result="fail $kind: $r"
                    break
                fi
                echo "@@REC $name counters $kind-after $("$remote" --api-socket "$sock" counters 2>&1 | tr -d '\n')@@"
                trace_count "$name" "$kind"
            done
            hog_stop
            # Leave the shell: /init prints @@GUEST-DONE@@ and powers off.
            echo exit >&3
        fi
        # A failed case's guest is not going to power off: do not wait out the limit again.
        if [ -z "$result" ]; then wait_exit "$pid" "$limit"; else wait_exit "$pid" 5; fi
        exec 3>&-
    fi
    tr -d '\r' <"$log" | sed 's/^/L2| /'
    sed 's/^/VMM| /' "$err"
    [ "$exit_status" = killed ] && [ -z "$result" ] && result="fail pv-vmm still running after ${limit}s"
    # No case here asks for a triple fault: one fails the case.
    fail_on_triple_fault "$err"
    [ "$exit_status" != killed ] && echo "@@STAT $name vmm_exit $exit_status@@"
    echo "@@CASE $name BOOT $(elapsed_s "$t0")@@"
    echo "@@CASE $name END ${result:-ok}@@"
}

# Run the cases; the quiet ones in parallel batches, their outputs printed in case order.
order=""
batch=0
while [ $# -ge 4 ]; do
    name=$1 cpus=$(echo "$2" | sed "s/OVER/$over/g; s/HOSTCPUS/$ncpu/g") hog=$3 jobs=$4
    shift 4
    order="$order $name"
    if [ "$hog" = 0 ] && { [ "$jobs" = - ] || [ "$jobs" = refuse ]; }; then
        retry_lab_fault run_case "$name" "$cpus" "$hog" "$jobs" >"$work/$name.out" 2>&1 &
        batch=$((batch + 1))
        if [ $batch -ge "$ncpu" ]; then
            wait
            batch=0
        fi
    else
        wait
        batch=0
        retry_lab_fault run_case "$name" "$cpus" "$hog" "$jobs" >"$work/$name.out" 2>&1
    fi
done
wait
# Leave the host's tracing as it was (on a bare-metal runner it is the real host's).
if [ $tracefs = yes ]; then
    for ev in "$flush_event" "$hc_event" "$msr_event"; do
        echo 0 >"$ev/enable" 2>/dev/null
        echo 0 >"$ev/filter" 2>/dev/null
    done
    echo "$old_buffer_kb" >"$trace/buffer_size_kb" 2>/dev/null
fi
status=0
for name in $order; do
    cat "$work/$name.out"
    grep -q "^@@CASE $name END ok@@" "$work/$name.out" || status=1
done
rm -rf "$work"
exit $status
