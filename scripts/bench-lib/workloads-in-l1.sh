#!/bin/sh
# Runs inside the KVM lab's L1 (busybox sh) or directly on a bare-metal host (any POSIX sh):
# the guest workload benchmark of scripts/bench. For each round, each scenario, each VMM
# configuration (interleaved: pv-vmm, QEMU, Cloud Hypervisor, pv-vmm, QEMU, ...) it boots the VM(s), lets
# every guest run the scenario's workloads (scripts/bench-lib/guest-init.sh: the guest
# waits for 'go' before each workload), reads the KVM counters of every VM right before and
# right after each workload, and sends everything back as one compressed blob per boot.
# All parsing happens on the host (scripts/bench-lib/report.py).
#
# Usage: workloads-in-l1.sh PV_VMM PV_REMOTE QEMU QMP PV_LOAD KERNEL INITRD RUNS SECS TIMEOUT
#                           SCENARIO=KIND[,KIND...] ...
#   RUNS      rounds (every scenario and configuration once per round), numbered from
#             $PV_BENCH_FIRST_ROUND (default 1)
#   SECS      seconds per workload run (pv.secs)
#   TIMEOUT   limit in seconds for a guest to boot, and beyond SECS for each workload
#   SCENARIO  overcommit2 | overcommit3 | oversub | dedicated, with the workloads to run
# Environment: BENCH_CH, BENCH_CH_REMOTE and BENCH_UNIX_CONSOLE (all three or none): the
#   patched cloud-hypervisor, its ch-remote, and integration-tests/guest/unix-console; with
#   them every scenario also boots Cloud Hypervisor (configs ch-*), whose serial console is
#   its socket (it takes serial input from a terminal only) carried by unix-console.
#   BENCH_TRACE=off: no trace histograms (the host tests run this script with stand-ins).
#
# Scenarios, N = this host's CPUs:
#   overcommitK  K VMs at once, N vCPUs each (the seed's overcommit, scaled to this host)
#   oversub      one VM with 2N vCPUs, and one busy loop on the host while the workloads run
#   dedicated    one VM with N vCPUs, dedicated vs default, and the workloads on the host
#                itself (no VM: the physical limit)
#
# Output (stdout):
#   @@INFO <key>=<value>@@
#   @@RETRY round=<r> scenario=<s> config=<c> fail reason=<text>@@  (a boot run again after
#     it failed: a guest ended, was not ready, or did not finish a workload; see boot)
#   @@BOOT round=<r> scenario=<s> config=<c> result=ok|fail [reason=<text>] seconds=<s>@@
#   @@BLOB <round>-<scenario>-<config> BEGIN@@, base64 of a tar.gz of the boot's files
#   (serial logs, command lines, counter samples), @@BLOB END@@
# Exit status: 0 when every boot ran every workload, 1 otherwise, 2 on a usage or setup error.
set -u

[ $# -ge 11 ] || {
    echo "usage: $0 PV_VMM PV_REMOTE QEMU QMP PV_LOAD KERNEL INITRD RUNS SECS TIMEOUT SCENARIO=KINDS..." >&2
    exit 2
}
pvvmm=$1 remote=$2 qemu=$3 qmp=$4 pvload=$5 kernel=$6 initrd=$7 runs=$8 secs=$9
shift 9
limit=$1
shift

ch=${BENCH_CH:-} ch_remote=${BENCH_CH_REMOTE:-} unix_console=${BENCH_UNIX_CONSOLE:-}
if [ -n "$ch$ch_remote$unix_console" ] && { [ -z "$ch" ] || [ -z "$ch_remote" ] || [ -z "$unix_console" ]; }; then
    echo "workloads-in-l1: BENCH_CH, BENCH_CH_REMOTE and BENCH_UNIX_CONSOLE go together" >&2
    exit 2
fi
for f in "$pvvmm" "$remote" "$qemu" "$qmp" "$pvload" $ch $ch_remote $unix_console; do
    [ -x "$f" ] || { echo "workloads-in-l1: $f is not executable" >&2; exit 2; }
done
for f in "$kernel" "$initrd"; do
    [ -r "$f" ] || { echo "workloads-in-l1: cannot read $f" >&2; exit 2; }
done
[ -c /dev/kvm ] || { echo "workloads-in-l1: no /dev/kvm" >&2; exit 2; }

# The CPUs the scenarios size their VMs by: this host's, or PV_BENCH_CPUS (scripts/bench
# --quick, which runs L1 with one CPU and its VMs as for two).
host_cpus=$(grep -c '^processor' /proc/cpuinfo)
ncpus=${PV_BENCH_CPUS:-$host_cpus}
case $ncpus in
'' | *[!0-9]* | 0) echo "workloads-in-l1: PV_BENCH_CPUS must be a positive whole number, not '$ncpus'" >&2; exit 2 ;;
esac
echo "@@INFO inside_lab=${PV_LAB_INSIDE:-0}@@"
echo "@@INFO kernel_release=$(uname -r)@@"
echo "@@INFO cpus=$ncpus@@"
[ "$ncpus" = "$host_cpus" ] || echo "@@INFO host_cpus=$host_cpus@@"
echo "@@INFO cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)@@"
echo "@@INFO kvm_module=$(cut -d' ' -f1 /proc/modules 2>/dev/null | grep -E '^kvm_(amd|intel)$' | head -n1)@@"
echo "@@INFO mem_total_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)@@"
echo "@@INFO qemu_version=$("$qemu" -version 2>/dev/null | head -n1 | tr -d '@')@@"
echo "@@INFO pv_vmm_version=$("$pvvmm" --version 2>/dev/null | head -n1 | tr -d '@')@@"
[ -n "$ch" ] && echo "@@INFO ch_version=$("$ch" --version 2>/dev/null | head -n1 | tr -d '@')@@"
echo "@@INFO halt_poll_ns=$(cat /sys/module/kvm/parameters/halt_poll_ns 2>/dev/null)@@"

# KVM's per-VM statistics in debugfs: the one source read the same way for every VMM.
if [ ! -d /sys/kernel/debug/kvm ]; then
    mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
fi
if [ -d /sys/kernel/debug/kvm ]; then
    echo "@@INFO debugfs=yes@@"
else
    echo "@@INFO debugfs=no@@"
fi

# Per-thread counts from KVM's trace events, as histogram triggers (no trace buffer to
# overflow), read before and after each workload. Each has an id (the sample file's suffix),
# an event and the field it counts by:
#   flush  kvm_pv_tlb_flush  need_flush_tlb: fires at each steal-time update of a guest with
#                            PV TLB flush; 1 when the guest asked for a flush there
#   exit   kvm_exit          exit_reason: every exit
#   hc     kvm_hypercall     nr: every hypercall (10 send IPI, 11 sched yield, 5 kick)
#   pvipi  kvm_hypercall     a3: the ICR value (vector) of each KVM_HC_SEND_IPI
#   apic   kvm_apic          reg: APIC register writes (0x300 ICR: one per IPI sent)
#   icr    kvm_apic          val: the value of each ICR write (vector, shorthand, destination)
tracing=/sys/kernel/tracing
[ -d "$tracing/events" ] || mount -t tracefs tracefs "$tracing" 2>/dev/null
HIST_IDS="flush exit hc pvipi apic icr"
hist_event() {
    case "$1" in
    flush) echo kvm_pv_tlb_flush ;;
    exit) echo kvm_exit ;;
    hc | pvipi) echo kvm_hypercall ;;
    apic | icr) echo kvm_apic ;;
    esac
}
hist_field() {
    case "$1" in
    flush) echo need_flush_tlb ;;
    exit) echo exit_reason ;;
    hc) echo nr ;;
    pvipi) echo a3 ;;
    apic) echo reg ;;
    icr) echo val ;;
    esac
}
hist_trigger() {
    case "$1" in
    pvipi) filter=' if nr == 10' ;;
    apic) filter=' if rw == 1' ;;
    icr) filter=' if rw == 1 && reg == 768' ;;
    *) filter='' ;;
    esac
    echo "hist:keys=common_pid,$(hist_field "$1"):vals=hitcount:size=8192$filter"
}
# Appended (>>), never truncated: opening a trigger file with O_TRUNC removes every trigger
# of the event, also other people's on a shared host.
hist_add() {
    hist_trigger "$1" >>"$tracing/events/kvm/$(hist_event "$1")/trigger" 2>/dev/null
}
hist_remove() {
    echo "!$(hist_trigger "$1")" >>"$tracing/events/kvm/$(hist_event "$1")/trigger" 2>/dev/null
}
hists=""
# BENCH_TRACE=off leaves tracing alone (the host-side test of this script).
[ "${BENCH_TRACE:-on}" = off ] && HIST_IDS=""
for id in $HIST_IDS; do
    f=$tracing/events/kvm/$(hist_event "$id")
    [ -w "$f/trigger" ] || continue
    hist_remove "$id" # a leftover of an interrupted run
    if hist_add "$id" && [ -r "$f/hist" ]; then
        hists="$hists $id"
    fi
done
echo "@@INFO trace_hists=${hists# }@@"
# Empties the histograms: each boot starts from zero, so that they stay small.
hist_reset() {
    for id in $hists; do
        hist_remove "$id"
        hist_add "$id" || echo "workloads-in-l1: warning: re-adding the $id histogram failed" >&2
    done
}

work=$(mktemp -d /tmp/bench-workloads.XXXXXX) || exit 2
status=0
hog=""

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    [ -n "$hog" ] && kill "$hog" 2>/dev/null
    for id in $hists; do
        hist_remove "$id"
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The lab's words for both VMMs' guests (scripts/lab/lib.sh; none on bare metal).
lab_guest=${PV_LAB_GUEST_ARGS:+ $PV_LAB_GUEST_ARGS}
now_cs() { read -r up _ </proc/uptime; echo "${up%.*}${up#*.}" | sed 's/^0*//;s/^$/0/'; }

# The guest kernel's command line (the same for both VMMs) for the workloads KINDS.
cmdline_for() {
    echo "console=ttyS0 quiet panic=-1$lab_guest pv.bench=$1 pv.secs=$secs"
}

# Everything but the four features under test (PV TLB flush, PV send-IPI, PV sched yield,
# PV unhalt): clocks, steal time, PV EOI, async PF stay as with 'all'.
PV_OFF_LIST='[clocksource,nop_io_delay,clocksource2,async_pf,steal_time,pv_eoi,async_pf_vmexit,poll_control,async_pf_int,msi_ext_dest_id,clocksource_stable]'
QEMU_OFF_FLAGS='kvm-pv-tlb-flush=off,kvm-pv-ipi=off,kvm-pv-sched-yield=off,kvm-pv-unhalt=off'

# start_vm DIR INDEX CONFIG VCPUS KINDS: starts one VMM in the background; sets vm_pid_<i>
# (and console_pid_<i>, the console helper of a Cloud Hypervisor VM, or nothing).
start_vm() {
    d=$1 i=$2 cfg=$3 n=$4 kinds=$5
    fifo=$d/vm$i.in
    mkfifo "$fifo"
    # A writer that stays open, so the VMM's stdin never sees EOF between our lines.
    eval "exec $((i + 2))<>\"\$fifo\""
    sock=$d/vm$i.sock
    append=$(cmdline_for "$kinds")
    # pv-vmm and the patched Cloud Hypervisor take the same --cpus words.
    case "${cfg##*-}" in
    on | default) cpus="boot=$n" ;;
    off) cpus="boot=$n,kvm_pv=$PV_OFF_LIST" ;;
    dedicated) cpus="boot=$n,dedicated=on" ;;
    esac
    serial=""
    case "$cfg" in
    pv-vmm-*)
        set -- "$pvvmm" --kernel "$kernel" --initramfs "$initrd" --cpus "$cpus" \
            --memory size=512M --serial tty --cmdline "$append" --api-socket "path=$sock"
        ;;
    ch-*)
        serial=$d/vm$i.serial
        # Cloud Hypervisor answers a guest's reset (a triple fault: KVM_EXIT_SHUTDOWN) with a
        # reboot that closes and remakes the serial socket; its event monitor tells it.
        set -- "$ch" --kernel "$kernel" --initramfs "$initrd" --cpus "$cpus" \
            --memory size=512M --console off --serial "socket=$serial" --cmdline "$append" \
            --api-socket "path=$sock" --event-monitor "path=$d/vm$i.events"
        ;;
    qemu-*)
        extra=""
        case "$cfg" in
        qemu-on | qemu-default) cpu=host ;;
        qemu-off) cpu="host,$QEMU_OFF_FLAGS" ;;
        qemu-dedicated) cpu="host,kvm-hint-dedicated=on" extra="cpu-pm=on" ;;
        esac
        set -- "$qemu" -nodefaults -no-user-config -enable-kvm -cpu "$cpu" -smp "$n" -m 512M \
            -kernel "$kernel" -initrd "$initrd" -append "$append" -nographic -serial stdio \
            -monitor none -no-reboot -qmp "unix:$sock,server=on,wait=off"
        [ -n "$extra" ] && set -- "$@" -overcommit "$extra"
        ;;
    esac
    # The command line as run, one argument per line (for the report).
    printf '%s\n' "$@" >"$d/vm$i.cmd"
    eval "console_pid_$i="
    if [ -z "$serial" ]; then
        "$@" <"$fifo" >"$d/vm$i.log" 2>"$d/vm$i.err" &
        eval "vm_pid_$i=\$!"
    else
        # The guest's console goes through the serial socket: unix-console carries the
        # fifo's lines to it and its output to the log, until the VMM closes it.
        "$@" </dev/null >"$d/vm$i.out" 2>"$d/vm$i.err" &
        eval "vm_pid_$i=\$!"
        "$unix_console" "$serial" "$limit" <"$fifo" >"$d/vm$i.log" 2>"$d/vm$i.console.err" &
        eval "console_pid_$i=\$!"
    fi
}

pid_of() { eval "echo \$vm_pid_$1"; }

# gone INDEX: sets why to the reason VM INDEX can no longer run its workload ('exited';
# 'reset': a Cloud Hypervisor guest that reset, which its VMM then reboots; 'console-ended':
# the console helper of a Cloud Hypervisor VM ended, so the guest's output is lost), or to
# nothing while it runs. A guest of pv-vmm or QEMU (-no-reboot) that resets ends its VMM.
# Not to be called in a command substitution: there the VMM that exited is a zombie that
# kill -0 still finds.
gone() {
    why=""
    if ! kill -0 "$(pid_of "$1")" 2>/dev/null; then
        why=exited
    elif grep -q '"rebooting"' "$d/vm$1.events" 2>/dev/null; then
        why=reset
    else
        c=$(eval "echo \$console_pid_$1")
        if [ -n "$c" ] && ! kill -0 "$c" 2>/dev/null; then
            why=console-ended
        fi
    fi
}

# sample DIR INDEX CONFIG TAG: the counters of VM INDEX now, into DIR/TAG.vmINDEX.*.
sample() {
    d=$1 i=$2 cfg=$3 tag=$4
    p=$(pid_of "$i")
    f=$d/$tag.vm$i
    now_cs >"$f.t"
    # KVM names the VM's directory after the thread that created it: the main thread for
    # pv-vmm and QEMU, Cloud Hypervisor's vmm thread.
    for t in /proc/"$p"/task/*; do
        for dir in /sys/kernel/debug/kvm/"${t##*/}"-*; do
            [ -d "$dir" ] && grep -H . "$dir"/* >"$f.debugfs" 2>/dev/null
        done
    done
    # The VMM's threads with their names (vcpu0 for pv-vmm, 'CPU 0/KVM' for QEMU).
    grep -H . /proc/"$p"/task/*/comm >"$f.tasks" 2>/dev/null
    tids=$(cd "/proc/$p/task" 2>/dev/null && echo * | tr ' ' '|')
    for id in $hists; do
        # The trigger line proves the histogram was there (no lines then means no events);
        # two histograms of one event differ by their field.
        field=$(hist_field "$id")
        grep -E "^# trigger info: hist:keys=common_pid,$field:|common_pid: *(${tids%|}), $field:" \
            "$tracing/events/kvm/$(hist_event "$id")/hist" >"$f.$id" 2>/dev/null
    done
    case "$cfg" in
    pv-vmm-*) "$remote" --api-socket "$d/vm$i.sock" counters >"$f.api.json" 2>"$f.api.err" ;;
    ch-*) "$ch_remote" --api-socket "$d/vm$i.sock" counters >"$f.api.json" 2>"$f.api.err" ;;
    qemu-*)
        "$qmp" "$d/vm$i.sock" \
            '{"execute":"query-stats","arguments":{"target":"vcpu","providers":[{"provider":"kvm"}]}}' \
            '{"execute":"query-stats","arguments":{"target":"vm","providers":[{"provider":"kvm"}]}}' \
            '{"execute":"query-cpus-fast"}' >"$f.qmp.json" 2>"$f.qmp.err"
        ;;
    esac
}

# One boot: run_boot ROUND SCENARIO CONFIG KINDS NVMS VCPUS. Sets boot_result.
run_boot() {
    round=$1 scen=$2 cfg=$3 kinds=$4 nvms=$5 vcpus=$6
    d=$work/$round-$scen-$cfg
    mkdir -p "$d"
    t_boot=$(now_cs)
    boot_result=ok
    {
        echo "round=$round"
        echo "scenario=$scen"
        echo "config=$cfg"
        echo "vms=$nvms"
        echo "vcpus=$vcpus"
        echo "host_cpus=$host_cpus"
        echo "secs=$secs"
        echo "kinds=$kinds"
    } >"$d/meta"
    hist_reset
    i=1
    while [ "$i" -le "$nvms" ]; do
        start_vm "$d" "$i" "$cfg" "$vcpus" "$kinds"
        i=$((i + 1))
    done
    wait_limit=$limit
    for kind in $(echo "$kinds" | tr ',' ' '); do
        # Every guest ready for this workload?
        t0=$(now_cs)
        while :; do
            ready=0 i=1
            while [ "$i" -le "$nvms" ]; do
                if grep -q "@@BENCH-READY $kind@@" "$d/vm$i.log"; then
                    ready=$((ready + 1))
                elif gone "$i" && [ -n "$why" ]; then
                    boot_result="fail reason=vm$i-$why-before-$kind"
                fi
                i=$((i + 1))
            done
            [ "$boot_result" = ok ] || break
            [ "$ready" -eq "$nvms" ] && break
            if [ $(($(now_cs) - t0)) -ge $((wait_limit * 100)) ]; then
                boot_result="fail reason=not-ready-for-$kind-after-${wait_limit}s"
                break
            fi
            sleep 0.1
        done
        [ "$boot_result" = ok ] || break
        if [ "$scen" = oversub ] && [ -z "$hog" ]; then
            # The host CPU hog: a busy loop competing with the vCPUs.
            sh -c 'while :; do :; done' &
            hog=$!
        fi
        i=1
        while [ "$i" -le "$nvms" ]; do
            sample "$d" "$i" "$cfg" "$kind.before"
            i=$((i + 1))
        done
        i=1
        while [ "$i" -le "$nvms" ]; do
            echo go >"$d/vm$i.in"
            i=$((i + 1))
        done
        # Each guest's counters as soon as its workload is done.
        t0=$(now_cs) pending=$nvms
        i=1
        while [ "$i" -le "$nvms" ]; do
            eval "done_$i=no"
            i=$((i + 1))
        done
        while [ "$pending" -gt 0 ]; do
            i=1
            while [ "$i" -le "$nvms" ]; do
                if [ "$(eval "echo \$done_$i")" = no ]; then
                    if grep -q "@@BENCH-DONE $kind " "$d/vm$i.log"; then
                        sample "$d" "$i" "$cfg" "$kind.after"
                        eval "done_$i=yes"
                        pending=$((pending - 1))
                    elif gone "$i" && [ -n "$why" ]; then
                        boot_result="fail reason=vm$i-$why-during-$kind"
                    fi
                fi
                i=$((i + 1))
            done
            [ "$boot_result" = ok ] || break
            [ "$pending" -eq 0 ] && break
            if [ $(($(now_cs) - t0)) -ge $(((secs + limit) * 100)) ]; then
                boot_result="fail reason=$kind-not-done-after-$((secs + limit))s"
                break
            fi
            sleep 0.1
        done
        [ "$boot_result" = ok ] || break
        wait_limit=$((limit + secs))
    done
    if [ -n "$hog" ]; then
        kill "$hog" 2>/dev/null
        wait "$hog" 2>/dev/null
        hog=""
    fi
    # The guests power off once told so after the last workload; give them a moment.
    if [ "$boot_result" = ok ]; then
        i=1
        while [ "$i" -le "$nvms" ]; do
            echo go >"$d/vm$i.in"
            i=$((i + 1))
        done
    fi
    i=1
    while [ "$i" -le "$nvms" ]; do
        p=$(pid_of "$i")
        t0=$(now_cs)
        while kill -0 "$p" 2>/dev/null; do
            if [ "$boot_result" != ok ] || [ $(($(now_cs) - t0)) -ge 6000 ]; then
                kill -KILL "$p" 2>/dev/null
                break
            fi
            sleep 0.1
        done
        wait "$p" 2>/dev/null
        echo "$?" >"$d/vm$i.exit"
        c=$(eval "echo \$console_pid_$i")
        if [ -n "$c" ]; then
            # It ends when the VMM closes the socket, after the guest's last output; a VMM
            # that was killed may leave it waiting.
            t0=$(now_cs)
            while kill -0 "$c" 2>/dev/null && [ $(($(now_cs) - t0)) -lt 300 ]; do
                sleep 0.1
            done
            kill "$c" 2>/dev/null
            wait "$c" 2>/dev/null
        fi
        eval "exec $((i + 2))>&-"
        rm -f "$d/vm$i.in" "$d/vm$i.sock" "$d/vm$i.serial"
        i=$((i + 1))
    done
    seconds=$(($(now_cs) - t_boot))
    seconds=$((seconds / 100)).$(printf '%02d' $((seconds % 100)))
}

# One boot (run_boot's arguments), run once more when it failed: in the lab that is its
# L2 fault, which comes to pv-vmm's and QEMU's guests alike, before /init is up and during
# workloads (an A/B of 3 + 3 VMs with 25 s of tlb-sleep lost 2 of 24 pv-vmm and 1 of 24
# QEMU guests; QEMU with -no-reboot just exits), or a guest that stopped making progress.
# The failed attempt's figures are dropped whole (the second run's are the boot's); the
# retry is reported as @@RETRY ...@@ (report.py lists it in the report) and the ended
# guest's console and its VMM's stderr (every guest's when none ended) go to stderr. A
# second failure is the boot's result.
boot() {
    run_boot "$@"
    if [ "$boot_result" != ok ]; then
        echo "@@RETRY round=$round scenario=$scen config=$cfg $boot_result@@"
        echo "workloads-in-l1: $round-$scen-$cfg: $boot_result; running the boot once more" >&2
        # The guest that ended, from a reason that names it ("fail reason=vmN-<why>-..."),
        # if one does.
        ended=""
        case "$boot_result" in
        "fail reason=vm"[0-9]*)
            ended=${boot_result#fail reason=vm}
            ended=${ended%%-*}
            ;;
        esac
        for vm_log in "$d"/vm*.log; do
            [ -z "$ended" ] || [ "$vm_log" = "$d/vm$ended.log" ] || continue
            echo "--- ${vm_log##*/} and its VMM's stderr (tails):"
            tr -d '\r' <"$vm_log" | tail -n 20
            tail -n 20 "${vm_log%.log}.err" 2>/dev/null
            grep -h '"event"' "${vm_log%.log}.events" 2>/dev/null | tail -n 5
        done >&2
        rm -rf "$d"
        run_boot "$@"
    fi
    echo "result=$boot_result" >>"$d/meta"
    echo "@@BOOT round=$round scenario=$scen config=$cfg result=$boot_result seconds=$seconds@@"
    emit "$d" "$round-$scen-$cfg"
    [ "$boot_result" = ok ] || status=1
}

# The workloads on this host itself, no VM: the physical limit of the dedicated scenario.
run_bare() {
    round=$1 scen=$2 kinds=$3
    d=$work/$round-$scen-bare
    mkdir -p "$d"
    t_boot=$(now_cs)
    boot_result=ok
    {
        echo "round=$round"
        echo "scenario=$scen"
        echo "config=bare"
        echo "vms=0"
        echo "vcpus=$ncpus"
        echo "host_cpus=$host_cpus"
        echo "secs=$secs"
        echo "kinds=$kinds"
    } >"$d/meta"
    for kind in $(echo "$kinds" | tr ',' ' '); do
        echo "$pvload $kind $secs" >>"$d/bare.cmd"
        "$pvload" "$kind" "$secs" >>"$d/bare.log" 2>&1 || boot_result="fail reason=pv-load-$kind-failed"
    done
    seconds=$(($(now_cs) - t_boot))
    seconds=$((seconds / 100)).$(printf '%02d' $((seconds % 100)))
    echo "result=$boot_result" >>"$d/meta"
    echo "@@BOOT round=$round scenario=$scen config=bare result=$boot_result seconds=$seconds@@"
    emit "$d" "$round-$scen-bare"
    [ "$boot_result" = ok ] || status=1
}

emit() {
    echo "@@BLOB $2 BEGIN@@"
    tar -C "$1" -czf - . | base64
    echo "@@BLOB END@@"
    rm -rf "$1"
}

# configs SETTING...: the boots of each setting, interleaved by VMM (pv-vmm, QEMU, Cloud
# Hypervisor when it is given).
configs() {
    for setting; do
        echo "pv-vmm-$setting qemu-$setting"
        [ -n "$ch" ] && echo "ch-$setting"
    done
}

# PV_BENCH_FIRST_ROUND: the number of this run's first round (scripts/bench runs one round
# per lab run).
round=${PV_BENCH_FIRST_ROUND:-1}
case "$round" in
'' | *[!0-9]*)
    echo "workloads-in-l1: PV_BENCH_FIRST_ROUND=$round is not a round number" >&2
    exit 2
    ;;
esac
last_round=$((round + runs - 1))
while [ "$round" -le "$last_round" ]; do
    for spec in "$@"; do
        scen=${spec%%=*} kinds=${spec#*=}
        case "$scen" in
        overcommit[0-9])
            for cfg in $(configs on off); do
                boot "$round" "$scen" "$cfg" "$kinds" "${scen#overcommit}" "$ncpus"
            done
            ;;
        oversub)
            for cfg in $(configs on off); do
                boot "$round" "$scen" "$cfg" "$kinds" 1 $((2 * ncpus))
            done
            ;;
        dedicated)
            for cfg in $(configs default dedicated); do
                boot "$round" "$scen" "$cfg" "$kinds" 1 "$ncpus"
            done
            # The physical limit needs a host of the size the VMs were sized for (with
            # PV_BENCH_CPUS above this host's CPUs, pingpong's two CPUs may not exist).
            if [ "$ncpus" = "$host_cpus" ]; then
                run_bare "$round" "$scen" "$kinds"
            else
                echo "@@INFO bare_skipped=the VMs are sized for $ncpus CPUs and this host has $host_cpus@@"
            fi
            ;;
        *)
            echo "workloads-in-l1: unknown scenario '$scen'" >&2
            exit 2
            ;;
        esac
    done
    round=$((round + 1))
done
exit $status
