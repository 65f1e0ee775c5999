# Shell helpers shared by the lab case scripts (sourced, busybox sh in L1 or any POSIX sh on
# a bare-metal runner).

# Uptime in hundredths of a second (busybox date has no %N).
now_cs() { read -r up _ </proc/uptime; echo "${up%.*}${up#*.}" | sed 's/^0*//;s/^$/0/'; }

# elapsed_s T0: seconds (two decimals) since now_cs printed T0.
elapsed_s() {
    d=$(($(now_cs) - $1))
    echo "$((d / 100)).$(printf '%02d' $((d % 100)))"
}

# stat_of PID NAME: the named statistic (debugfs) of the VM that process PID runs, empty
# if there is none (yet).
stat_of() {
    for d in /sys/kernel/debug/kvm/"$1"-*; do
        [ -r "$d/$2" ] && { cat "$d/$2"; return; }
    done
}

# running PID: process PID exists and has not exited. A zombie counts as exited: callers
# in a command substitution (a subshell) cannot reap their parent's children, and kill -0
# succeeds on a zombie, so a VMM that died at once used to be waited for until the limit
# (150 s in the lab, seen on 2026-12-04 when Cloud Hypervisor refused a serial socket).
running() {
    kill -0 "$1" 2>/dev/null || return 1
    # The state is the field after the command name, which ends at the last ')'.
    [ "$(sed 's/.*) //; s/ .*//' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# wait_log FILE PATTERN COUNT SECONDS PID: until FILE has COUNT lines matching PATTERN
# (carriage returns ignored). Fails (status 1, reason on stdout) if process PID exits first
# or the time runs out.
wait_log() {
    wl_t0=$(now_cs)
    while [ "$(tr -d '\r' <"$1" | grep -c -- "$2")" -lt "$3" ]; do
        if ! running "$5"; then
            echo "pv-vmm exited while waiting for '$2'"
            return 1
        fi
        if [ $(($(now_cs) - wl_t0)) -ge $(($4 * 100)) ]; then
            echo "no '$2' x$3 after $4 s"
            return 1
        fi
        sleep 0.2
    done
}

# wait_exit PID SECONDS: waits for process PID (a child of this shell) to exit, at most
# SECONDS (then kills it); sets exit_status to its status, or to "killed". Not to be called
# in a command substitution: a subshell cannot wait for its parent's children.
wait_exit() {
    we_t0=$(now_cs)
    while kill -0 "$1" 2>/dev/null; do
        if [ $(($(now_cs) - we_t0)) -ge $(($2 * 100)) ]; then
            kill -KILL "$1" 2>/dev/null
            wait "$1" 2>/dev/null
            exit_status=killed
            return
        fi
        sleep 0.1
    done
    wait "$1"
    exit_status=$?
}

# hog_start: one busy loop per host CPU ($ncpu, which the caller sets), until hog_stop.
hog_pids=""
hog_start() {
    i=0
    while [ $i -lt "$ncpu" ]; do
        sh -c 'while :; do :; done' &
        hog_pids="$hog_pids $!"
        i=$((i + 1))
    done
}
hog_stop() {
    [ -n "$hog_pids" ] && kill $hog_pids 2>/dev/null
    for p in $hog_pids; do wait "$p" 2>/dev/null; done
    hog_pids=""
}

# pv-vmm's words when its guest triple-faulted (its error line ends the VMM with status 1).
TRIPLE_FAULT='triple-faulted'

# What a case prints when its guest triple-faulted (pv-vmm's error) or reset (QEMU with
# -no-reboot -no-shutdown stops the VM; qemu-peer.sh tells it by its exit count), or when
# the guest's kernel reported an RCU stall: one of its vCPUs stopped running, as when L1
# wedges a vCPU thread (seen on 2026-12-03 in one of about 60 Cloud Hypervisor guests of
# the day, CPU 1 silent from its last serial echo on, L1's console quiet).
# Cloud Hypervisor (-v) logs 'VmExit::Reset' when its guest resets, and reboots it.
LAB_FAULT="$TRIPLE_FAULT"'\|VmExit::Reset\|the guest reset before it was up\|the guest reset after it was up\|rcu: INFO: rcu_[a-z]* detected stalls'

# lab_fault_in FILE...: the first line of FILEs that says the lab took the guest away
# (LAB_FAULT), carriage returns dropped; nothing when none does. The one place a case
# script, or a test reading one (lab_api's @@LAB-FAULT), tells a lab fault from a result.
lab_fault_in() {
    cat "$@" 2>/dev/null | tr -d '\r' | grep -m1 -e "$LAB_FAULT"
}

# fail_on_triple_fault ERR: when pv-vmm's stderr ERR says the guest triple-faulted and the
# case has no result yet, makes that its result (retry_lab_fault then runs it once more).
fail_on_triple_fault() {
    if [ -z "$result" ] && grep -q "$TRIPLE_FAULT" "$1"; then
        result="fail the guest triple-faulted"
    fi
}

# retry_lab_fault CASE_FUNCTION NAME ARGS...: runs CASE_FUNCTION NAME ARGS... (one case,
# its whole output on stdout) and runs it again when the lab took its guest away:
#  - the guest never came up (no 'L2| ...@@GUEST-UP') and it triple-faulted, reset, or
#    stalled (the case failed);
#  - or the case failed and its guest triple-faulted, reset or reported an RCU stall after
#    it was up (a case that expects the fault, or passes anyway, is not run again).
# In the lab such faults come in pv-vmm's and QEMU's guests alike, before and after they
# are up, at random cases and configurations: on 2026-11-26, alternating 3 pv-vmm and 3
# QEMU VMs (4 vCPUs each, 25 s of pv-load tlb-sleep) lost 2 of 24 pv-vmm guests and 1 of
# 24 QEMU guests, and L1 then panicked ("corrupted stack end") inside KVM's
# shutdown_interception for a QEMU vCPU, i.e. in the triple fault of QEMU's guest: the
# fault comes from the emulated SVM under L1, not from the VMM. KVM on AMD re-initializes
# the vCPU before the VMM can see where it was. Stalls, with RCU and soft-lockup reports
# from the guest while one of L1's vCPU threads is wedged, come a few times a day. The
# retry is reported as '@@RETRY <name> <the error or failure line>@@' (the tests print it
# loudly), never hidden; up to LAB_CASE_RETRIES (default 1) runs again, then the failure
# fails the case. (It was 2 with L1 on two CPUs, where the lab lost a QEMU guest twice in a
# row in the CI rehearsal of 2026-12-03; with one CPU, 0 of about 200 stress guests faulted.)
retry_lab_fault() {
    ref_left=${LAB_CASE_RETRIES:-1}
    while :; do
        ref_out=$("$@" 2>&1)
        ref_fault=$(printf '%s\n' "$ref_out" | lab_fault_in /dev/stdin)
        ref_failed=$(printf '%s\n' "$ref_out" | grep -m1 -e "^@@CASE $2 END fail")
        if printf '%s\n' "$ref_out" | grep -q '^L2| .*@@GUEST-UP'; then
            [ -n "$ref_failed" ] || ref_fault=""
        else
            ref_fault=${ref_fault:-$ref_failed}
        fi
        [ -n "$ref_fault" ] && [ "$ref_left" -gt 0 ] || break
        echo "@@RETRY $2 $(printf '%s\n' "$ref_fault" | tr -d '@')@@"
        ref_left=$((ref_left - 1))
    done
    printf '%s\n' "$ref_out"
}
