#!/usr/bin/env python3
"""The analysis half of scripts/bench: raw lab output in; results.json, report.md and PNG
plots out.

It reads what scripts/bench-lib/workloads-in-l1.sh printed (one base64 tar.gz blob per
boot), unpacks every boot's files into WORK/boots/, and computes, per cell (scenario,
workload, VMM configuration) and run: the guest's throughput and time per operation
(pv-load's @@WORK line), and the growth of the VM's KVM counters during the workload
divided by the number of operations. Then min/median/max per cell, on/off ratios for every
VMM (pv-vmm, QEMU, and the patched Cloud Hypervisor where the run booted it), and the
targets of issue 9 with how far each is met or missed.

Standard library only, except matplotlib for the plots (scripts/bench installs it in a
venv). Exit status: 0 when every boot ran every workload, 1 when some failed (the report
says which), 2 on bad input.
"""

import argparse
import base64
import io
import json
import math
import os
import re
import statistics
import sys
import tarfile
from datetime import datetime, timezone

# ----------------------------------------------------------------------------- vocabulary

SCENARIOS = {
    "overcommit2": "Overcommit, 2 VMs: two VMs at once, each with as many vCPUs as the host has CPUs, all running the workload",
    "overcommit3": "Overcommit, 3 VMs: three VMs at once, each with as many vCPUs as the host has CPUs, all running the workload",
    "oversub": "One VM with twice the host's CPUs, plus a busy loop on the host",
    "dedicated": "Dedicated: one VM with as many vCPUs as the host has CPUs, dedicated vs default, and the workload on the host itself",
}
SCENARIO_ORDER = ["overcommit2", "overcommit3", "oversub", "dedicated"]

KINDS = {
    "tlb": ("unmaps/s", "TLB shootdown: threads spin on every CPU in one address space, one maps and unmaps a page (op = one munmap)"),
    "tlb-sleep": ("unmaps/s", "TLB shootdown while the other threads mostly sleep (op = one munmap)"),
    "ebizzy": ("chunks/s", "ebizzy-style: every CPU allocates, fills, searches and frees 1 MiB mmap'd chunks (op = one chunk)"),
    "ipi": ("multicasts/s", "multicast IPI: expedited membarrier to all other CPUs while they spin (op = one membarrier); "
            "Linux sends an all-but-self multicast with the x2APIC shorthand, one ICR write, so PV send-IPI does not apply"),
    "ipi-mask": ("multicasts/s", "multicast IPI to some CPUs: as ipi, but the last CPU idles, so the mask is not all-but-self "
                 "and Linux uses send_IPI_mask: one ICR write per destination, or one KVM_HC_SEND_IPI with PV send-IPI"),
    "pingpong": ("round trips/s", "wake-up ping-pong: two threads on the first and last CPU hand a token through futexes (op = one round trip)"),
}
KIND_ORDER = ["tlb", "tlb-sleep", "ebizzy", "ipi", "ipi-mask", "pingpong"]

# Configuration -> (VMM, setting). "on"/"off" in the overcommit scenarios, "default"/
# "dedicated" in the dedicated one; "bare" is the host itself.
# The VMMs with the prefix of their configurations, in the order the rounds boot them.
VMMS = (("pv-vmm", "pv-vmm-"), ("QEMU", "qemu-"), ("Cloud Hypervisor", "ch-"))
CONFIGS = {
    prefix + setting: (vmm, setting)
    for vmm, prefix in VMMS
    for setting in ("on", "off", "default", "dedicated")
}
CONFIGS["bare"] = ("host", "bare")
# Tables and plots: each VMM's on/off pair, then each VMM's default/dedicated pair, then bare.
CONFIG_ORDER = [prefix + s for pair in (("on", "off"), ("default", "dedicated")) for _, prefix in VMMS for s in pair] + ["bare"]

# Counters reported per operation. From debugfs (per VM, summed over its vCPUs) unless said.
COUNTERS = [
    ("exits", "every VM exit (debugfs)"),
    ("sender_exits", "exits of vCPU 0, where the sending/unmapping/waking thread runs (KVM binary statistics per vCPU, through pv-vmm's and Cloud Hypervisor's vm.counters or QEMU's QMP)"),
    ("send_exits", "exits of vCPU 0 that send an IPI: ICR writes (x2APIC MSR or xAPIC MMIO, trace event kvm_apic) plus KVM_HC_SEND_IPI hypercalls (kvm_hypercall nr 10)"),
    ("multicast_sends", "of those, the ones with the function-call vector (0xfc): the exits that send membarrier's multicast"),
    ("hypercalls", "hypercalls (debugfs): PV send-IPI, PV sched yield, kick"),
    ("tlb_flush", "TLB flushes KVM did for the vCPUs (debugfs), including those requested in the steal-time record"),
    ("pv_flush_requests", "flushes requested through the steal-time record (trace event kvm_pv_tlb_flush with need_flush_tlb=1)"),
    ("halt_exits", "HLT exits (debugfs)"),
    ("irq_exits", "exits for host interrupts (debugfs)"),
    ("irq_window_exits", "exits to open an interrupt window (debugfs)"),
    ("insn_emulation", "instructions KVM emulated (debugfs)"),
    ("preemption_reported", "vCPU preempted at an instruction boundary, steal-time record marked preempted (debugfs)"),
    ("directed_yield_attempted", "directed yields: PV sched yield, PV spinlock kicks (debugfs)"),
    ("sender_hypercalls", "hypercalls of vCPU 0 (per-vCPU statistics)"),
    ("ipi_sends", "IPIs sent by the whole VM: ICR writes plus KVM_HC_SEND_IPI hypercalls (trace events)"),
    ("call_ipis", "of those, the function-call IPIs (vectors 0xfb, 0xfc): TLB shootdowns, membarrier, smp_call_function"),
]
COUNTER_NAMES = [c for c, _ in COUNTERS]
# Counters taken from debugfs.
DEBUGFS_COUNTERS = ["exits", "hypercalls", "tlb_flush", "halt_exits", "irq_exits", "irq_window_exits",
                    "insn_emulation", "preemption_reported", "directed_yield_attempted"]
# The columns of the per-workload tables.
TABLE_COUNTERS = ["exits", "sender_exits", "send_exits", "multicast_sends", "hypercalls", "tlb_flush", "pv_flush_requests", "halt_exits"]
# Breakdowns by key (trace events): exit reasons, hypercall numbers, APIC registers written.
# Keyed by the sample files' suffix (the trigger's id in workloads-in-l1.sh).
BREAKDOWNS = {
    "exit": "exits_by_reason",
    "hc": "hypercalls_by_nr",
    "apic": "apic_writes_by_reg",
    "vectors": "ipis_by_vector",
}
# IPIs sent, by vector: ICR writes (the icr histogram: the written value) and KVM_HC_SEND_IPI
# (the pvipi histogram: its ICR argument); the vector is the low byte of either.
VECTOR_SOURCES = ("icr", "pvipi")
VECTORS = {0xEC: "LOCAL_TIMER", 0xF6: "IRQ_WORK", 0xF7: "PLATFORM", 0xF8: "REBOOT", 0xFB: "CALL_FUNCTION_SINGLE",
           0xFC: "CALL_FUNCTION", 0xFD: "RESCHEDULE", 0xFE: "ERROR", 0xFF: "SPURIOUS", 0x00: "NMI/INIT"}
HC_NAMES = {5: "KICK_CPU", 9: "CLOCK_PAIRING", 10: "SEND_IPI", 11: "SCHED_YIELD", 12: "MAP_GPA_RANGE"}
APIC_REGS = {0x80: "TPR", 0xB0: "EOI", 0x300: "ICR", 0x310: "ICR2", 0x380: "TMICT", 0x320: "LVTT", 0x3E0: "TDCR", 0xF0: "SVR"}
SVM_EXITS = {
    0x060: "INTR", 0x061: "NMI", 0x064: "VINTR", 0x072: "CPUID", 0x077: "PAUSE", 0x078: "HLT", 0x07B: "IOIO",
    0x07C: "MSR", 0x07F: "SHUTDOWN", 0x081: "VMMCALL", 0x089: "WBINVD", 0x08A: "MONITOR", 0x08B: "MWAIT",
    0x08D: "XSETBV", 0x400: "NPF", 0x401: "AVIC_INCOMPLETE_IPI", 0x402: "AVIC_UNACCEL_ACCESS", 0x06E: "RDTSC",
    0x079: "INVLPG", 0x07A: "INVLPGA", 0x087: "RDTSCP", 0x0A2: "INVPCID",
}
VMX_EXITS = {
    0: "EXCEPTION_NMI", 1: "EXTERNAL_INTERRUPT", 7: "INTERRUPT_WINDOW", 8: "NMI_WINDOW", 10: "CPUID", 12: "HLT",
    14: "INVLPG", 18: "VMCALL", 28: "CR_ACCESS", 30: "IO_INSTRUCTION", 31: "MSR_READ", 32: "MSR_WRITE",
    36: "MWAIT", 39: "MONITOR", 40: "PAUSE", 44: "APIC_ACCESS", 45: "EOI_INDUCED", 48: "EPT_VIOLATION",
    49: "EPT_MISCONFIG", 52: "PREEMPTION_TIMER", 54: "WBINVD", 55: "XSETBV", 56: "APIC_WRITE",
}
SENDER_THREADS = ("vcpu0", "CPU 0/KVM")
RUN_BREAKDOWN_FIELDS = ("breakdown_per_op", "sender_breakdown_per_op", "guest_irqs_per_op")


def key_name(breakdown, key, vendor):
    """A readable name for an exit reason, hypercall number or APIC register."""
    if breakdown == "exits_by_reason":
        if vendor == "kvm_amd":
            if 0x40 <= key < 0x60:
                return f"EXCP_{key - 0x40}"
            if key < 0x20:
                return f"{'READ' if key < 0x10 else 'WRITE'}_CR{key & 0xF}"
            return SVM_EXITS.get(key, f"0x{key:x}")
        return VMX_EXITS.get(key, str(key))
    if breakdown == "hypercalls_by_nr":
        return HC_NAMES.get(key, str(key))
    if breakdown == "ipis_by_vector":
        return VECTORS.get(key, f"0x{key:x}")
    return APIC_REGS.get(key, f"0x{key:x}")


TARGETS_TEXT = {
    "tlb_overcommit": "Under overcommit, PV TLB flush gives at least 1.5x the TLB workload's throughput of PV off, and no less than QEMU's own on/off ratio",
    "ipi_exits": "With PV send-IPI a multicast costs at most one exit per send",
    "ipi_time": "With PV send-IPI a multicast takes at most half the time of PV off",
    "dedicated_vs_default": "Dedicated wake-up round trips take at most half of the default's",
    "dedicated_vs_bare": "Dedicated wake-up round trips stay within 1.5x of the bare host",
}


def die(msg):
    print(f"report.py: error: {msg}", file=sys.stderr)
    sys.exit(2)


# ----------------------------------------------------------------------------- parsing

MARK_RE = re.compile(r"^@@(INFO|BOOT|RETRY) (.*)@@$")
BLOB_BEGIN_RE = re.compile(r"^@@BLOB (\S+) BEGIN@@$")
WORK_RE = re.compile(r"@@WORK (.*?)@@")
HIST_RE = re.compile(r"common_pid:\s*(\d+),\s*\w+:\s*(\d+)\s*\}\s*hitcount:\s*(\d+)")
CPUID_RE = re.compile(r"@@CPUID-KVM base=(\S+) max=(\S+) features=(\S+) hints=(\S+)@@")


def kv_pairs(text):
    """'a=1 b=x' -> {'a': '1', 'b': 'x'} (values without spaces)."""
    out = {}
    for word in text.split():
        if "=" in word:
            k, v = word.split("=", 1)
            out[k] = v
    return out


def parse_raw(path, boots_dir):
    """Reads the lab's stdout: INFO lines, BOOT lines, blobs (unpacked into boots_dir), and
    RETRY lines (boots run again after they failed)."""
    info, boots, blobs, retries = {}, [], [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().replace("\r", "").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        m = MARK_RE.match(line)
        if m and m.group(1) == "INFO":
            k, _, v = m.group(2).partition("=")
            info[k] = v
        elif m and m.group(1) == "BOOT":
            boots.append(kv_pairs(m.group(2).split(" result=")[0]) | parse_boot_result(m.group(2)))
        elif m and m.group(1) == "RETRY":
            # round=<r> scenario=<s> config=<c> fail reason=<text, spaces allowed>
            head, sep, reason = m.group(2).partition(" reason=")
            retry = kv_pairs(head)
            if sep:
                retry["reason"] = reason
            retry["round"] = int(retry["round"]) if retry.get("round", "").isdigit() else 0
            retries.append(retry)
        else:
            b = BLOB_BEGIN_RE.match(line)
            if b:
                name = b.group(1)
                j = i + 1
                chunk = []
                while j < len(lines) and lines[j] != "@@BLOB END@@":
                    chunk.append(lines[j])
                    j += 1
                complete = j < len(lines)
                target = os.path.join(boots_dir, name)
                if complete and unpack_blob("".join(chunk), target):
                    blobs.append(name)
                else:
                    print(f"report.py: warning: blob {name} incomplete or corrupt", file=sys.stderr)
                i = j
        i += 1
    return info, boots, blobs, retries


def parse_boot_result(text):
    """The result part of a @@BOOT line: 'result=fail reason=x seconds=12.3'."""
    out = {}
    m = re.search(r"result=(\S+)", text)
    out["result"] = m.group(1) if m else "unknown"
    m = re.search(r"reason=(\S+)", text)
    if m:
        out["reason"] = m.group(1)
    m = re.search(r"seconds=(\S+)", text)
    if m:
        out["seconds"] = float(m.group(1))
    return out


def unpack_blob(b64, target):
    try:
        data = base64.b64decode(b64, validate=False)
        os.makedirs(target, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar.getmembers():
                # Plain files and directories only, inside the target.
                name = os.path.normpath(member.name)
                if name.startswith("..") or os.path.isabs(name):
                    return False
                if not (member.isfile() or member.isdir()):
                    continue
                if hasattr(tarfile, "data_filter"):
                    tar.extract(member, target, filter="data")
                else:  # Python before 3.11.4: the checks above are the filter
                    tar.extract(member, target)
        return True
    except (ValueError, tarfile.TarError, OSError, EOFError) as e:
        print(f"report.py: warning: unpacking into {target}: {e}", file=sys.stderr)
        return False


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().replace("\r", "")
    except OSError:
        return None


def read_meta(d):
    text = read_text(os.path.join(d, "meta")) or ""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def read_debugfs(path):
    """'/sys/kernel/debug/kvm/<pid>-<fd>/<stat>:<value>' lines -> {stat: int}."""
    text = read_text(path)
    if not text:
        return None
    out = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(":")
        name = name.rsplit("/", 1)[-1]
        try:
            out[name] = int(value)
        except ValueError:
            continue
    return out or None


def read_hist(path):
    """A histogram trigger's lines keyed by (common_pid, one field): {(tid, key): count}."""
    text = read_text(path)
    # Without its trigger line the histogram was not there when sampled: no data, not zero.
    if text is None or "# trigger info" not in text:
        return None
    return {(int(m.group(1)), int(m.group(2))): int(m.group(3)) for m in HIST_RE.finditer(text)}


def read_tasks(path):
    """'/proc/<pid>/task/<tid>/comm:<name>' lines -> {tid: name}."""
    text = read_text(path)
    if not text:
        return {}
    out = {}
    for line in text.splitlines():
        m = re.match(r"/proc/\d+/task/(\d+)/comm:(.*)$", line)
        if m:
            out[int(m.group(1))] = m.group(2)
    return out


def read_vcpu_stats(prefix):
    """Per-vCPU KVM statistics from the VMM's own interface: {vcpu index: {stat: int}},
    and where they came from; None when unavailable."""
    api = read_text(prefix + ".api.json")
    if api:
        try:
            return vcpu_stats_of_counters(json.loads(api))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None, None
    qmp = read_text(prefix + ".qmp.json")
    if qmp:
        try:
            answers = [json.loads(line) for line in qmp.splitlines() if line.strip()]
            vcpu_stats, cpus = answers[0]["return"], answers[2]["return"]
            index = {c["qom-path"]: int(c["cpu-index"]) for c in cpus}
            out = {}
            for entry in vcpu_stats:
                path = entry.get("qom-path")
                if path not in index:
                    continue
                out[index[path]] = {
                    s["name"]: int(s["value"])
                    for s in entry.get("stats", [])
                    if isinstance(s.get("value"), (int, float)) and not isinstance(s.get("value"), bool)
                }
            return out, "QEMU QMP query-stats"
        except (ValueError, KeyError, TypeError, IndexError):
            return None, None
    return None, None


def numbers(stats):
    """The integer entries of a statistics object (histograms and flags left out)."""
    return {k: int(x) for k, x in stats.items() if isinstance(x, (int, float)) and not isinstance(x, bool)}


VCPU_KEY_RE = re.compile(r"kvm_vcpu(\d+)$")


def vcpu_stats_of_counters(doc):
    """Per-vCPU statistics from a vm.counters answer in Cloud Hypervisor's VmCounters shape,
    which pv-vmm and the patched Cloud Hypervisor both give: each vCPU's counters under
    "kvm_vcpu<N>" (hypervisor_glue::counters)."""
    out = {int(m.group(1)): numbers(v) for k, v in doc.items() if (m := VCPU_KEY_RE.match(k))}
    if not out:
        raise ValueError("vm.counters has no per-vCPU entries")
    return out, "the VMM's vm.counters (VmCounters kvm_vcpu<N>)"


def read_vcpu0_thread(prefix):
    """The thread id of vCPU 0 from QEMU's query-cpus-fast answer, or None."""
    qmp = read_text(prefix + ".qmp.json")
    if not qmp:
        return None
    try:
        answers = [json.loads(line) for line in qmp.splitlines() if line.strip()]
        for cpu in answers[2]["return"]:
            if int(cpu["cpu-index"]) == 0:
                return int(cpu["thread-id"])
    except (ValueError, KeyError, TypeError, IndexError):
        pass
    return None


def parse_work(log, kind):
    """pv-load's @@WORK line for KIND in a serial log -> dict of numbers, or None."""
    for m in WORK_RE.finditer(log or ""):
        kv = kv_pairs(m.group(1))
        if kv.get("kind") != kind:
            continue
        try:
            return {
                "ops": int(kv["ops"]),
                "seconds": float(kv["seconds"]),
                "per_s": float(kv["per_s"]),
                "ns_per_op": float(kv["ns_per_op"]),
                "cpus": int(kv["cpus"]),
            }
        except (KeyError, ValueError):
            return None
    return None


IRQ_RE = re.compile(r"@@IRQ (\S+) (before|after) (\w+) (\d+)@@")
IRQ_NAMES = {"LOC": "local timer", "RES": "reschedule IPI", "CAL": "function call IPI", "TLB": "TLB shootdown IPI",
             "IWI": "IRQ work IPI", "NMI": "NMI", "SPU": "spurious", "PMI": "perf"}


def parse_irqs(log, kind):
    """The guest's interrupts received during workload KIND: {name: growth}, or None."""
    seen = {"before": {}, "after": {}}
    for m in IRQ_RE.finditer(log or ""):
        if m.group(1) == kind:
            seen[m.group(2)][m.group(3)] = int(m.group(4))
    if not seen["before"] or not seen["after"]:
        return None
    return {k: v - seen["before"].get(k, 0) for k, v in seen["after"].items() if k in seen["before"]}


def guest_view(log):
    m = CPUID_RE.search(log or "")
    lines = re.findall(r"kvm-guest: (.*)", log or "")
    cpus = re.search(r"@@GUEST-CPUS (\d+)@@", log or "")
    clock = re.search(r"clocksource: Switched to clocksource (\S+)", log or "")
    info = dict(re.findall(r"@@GUEST-INFO (\w+)=(.*?)@@", log or ""))
    return {
        "info": info,
        "features": m.group(3) if m else None,
        "hints": m.group(4) if m else None,
        "kvm_guest_lines": [x.strip() for x in lines],
        "cpus": int(cpus.group(1)) if cpus else None,
        "clocksource": clock.group(1) if clock else None,
    }


# ----------------------------------------------------------------------------- one boot


def load_boot(d):
    """Everything one boot left: meta, per-VM commands and guest views, and one run record
    per workload (None for a workload that did not complete in every VM)."""
    meta = read_meta(d)
    nvms = int(meta.get("vms", "0") or 0)
    kinds = [k for k in meta.get("kinds", "").split(",") if k]
    boot = {
        "round": int(meta.get("round", "0") or 0),
        "scenario": meta.get("scenario"),
        "config": meta.get("config"),
        "vms": nvms,
        "vcpus": int(meta.get("vcpus", "0") or 0),
        "host_cpus": int(meta.get("host_cpus", "0") or 0),
        "result": meta.get("result", "unknown"),
        "commands": [],
        "guests": [],
        "runs": {},
        "vcpu_source": None,
        "notes": [],
    }
    if boot["config"] == "bare":
        log = read_text(os.path.join(d, "bare.log")) or ""
        cmds = (read_text(os.path.join(d, "bare.cmd")) or "").splitlines()
        boot["commands"] = [c.split() for c in cmds]
        for kind in kinds:
            w = parse_work(log, kind)
            if w:
                boot["runs"][kind] = {
                    "ops": w["ops"],
                    "per_s": w["per_s"],
                    "ns_per_op": w["ns_per_op"],
                    "seconds": w["seconds"],
                    "counters": {},
                    "per_op": {},
                }
        return boot
    logs = []
    for i in range(1, nvms + 1):
        cmd = read_text(os.path.join(d, f"vm{i}.cmd"))
        boot["commands"].append(cmd.splitlines() if cmd else [])
        log = read_text(os.path.join(d, f"vm{i}.log")) or ""
        logs.append(log)
        g = guest_view(log)
        g["exit"] = (read_text(os.path.join(d, f"vm{i}.exit")) or "").strip()
        boot["guests"].append(g)
    for kind in kinds:
        run = boot_run(d, kind, nvms, logs, boot)
        if run:
            boot["runs"][kind] = run
    return boot


def delta_hist(pre, post, tids):
    """Growth per key of a histogram between two samples, over the threads TIDS."""
    hb, ha = read_hist(pre), read_hist(post)
    if hb is None or ha is None:
        return None
    out = {}
    for (tid, key), n in ha.items():
        if tid in tids:
            out[key] = out.get(key, 0) + n - hb.get((tid, key), 0)
    return out


def vectors_sent(pre, post, tids):
    """IPIs sent by the threads TIDS between two samples, by vector (ICR writes and
    KVM_HC_SEND_IPI together), or None without both histograms."""
    out = {}
    for source in VECTOR_SOURCES:
        part = delta_hist(pre + "." + source, post + "." + source, tids)
        if part is None:
            return None
        for value, n in part.items():
            out[value & 0xFF] = out.get(value & 0xFF, 0) + n
    return out


def add_into(total, part):
    for k, v in part.items():
        total[k] = total.get(k, 0) + v


def boot_run(d, kind, nvms, logs, boot):
    """One workload of one boot: the guests' results and the VMs' counters, summed over the
    VMs; None unless every VM completed the workload."""
    works = []
    counters = {c: 0 for c in COUNTER_NAMES}
    unavailable = set()
    breakdowns = {b: {} for b in BREAKDOWNS.values()}
    sender_breakdowns = {b: {} for b in BREAKDOWNS.values()}
    vcpu_sum_exits = 0
    guest_irqs = {}
    window = []
    for i in range(1, nvms + 1):
        w = parse_work(logs[i - 1], kind)
        if w is None:
            return None
        works.append(w)
        irqs = parse_irqs(logs[i - 1], kind)
        if irqs is None:
            unavailable.add("guest_irqs")
        else:
            add_into(guest_irqs, irqs)
        pre, post = os.path.join(d, f"{kind}.before.vm{i}"), os.path.join(d, f"{kind}.after.vm{i}")
        b, a = read_debugfs(pre + ".debugfs"), read_debugfs(post + ".debugfs")
        if b is None or a is None:
            unavailable.update(DEBUGFS_COUNTERS)
        else:
            for c in DEBUGFS_COUNTERS:
                if c in a and c in b:
                    counters[c] += a[c] - b[c]
                else:
                    unavailable.add(c)
        tasks = read_tasks(pre + ".tasks") | read_tasks(post + ".tasks")
        tids = set(tasks)
        # vCPU 0's thread: pv-vmm names it vcpu0; QEMU says which in query-cpus-fast.
        sender = {t for t, name in tasks.items() if name in SENDER_THREADS}
        qemu_vcpu0 = read_vcpu0_thread(pre) or read_vcpu0_thread(post)
        if qemu_vcpu0 is not None and qemu_vcpu0 in tids:
            sender = {qemu_vcpu0}
        flush = delta_hist(pre + ".flush", post + ".flush", tids)
        if flush is None:
            unavailable.add("pv_flush_requests")
        else:
            counters["pv_flush_requests"] += flush.get(1, 0)
        for hid, name in BREAKDOWNS.items():
            if hid == "vectors":
                whole = vectors_sent(pre, post, tids)
                own = vectors_sent(pre, post, sender) if sender else None
            else:
                whole = delta_hist(pre + "." + hid, post + "." + hid, tids)
                own = delta_hist(pre + "." + hid, post + "." + hid, sender) if sender else None
            if whole is None:
                unavailable.add(name)
            else:
                add_into(breakdowns[name], whole)
            if own is None:
                unavailable.add("sender_" + name)
            else:
                add_into(sender_breakdowns[name], own)
        vb, src = read_vcpu_stats(pre)
        va, _ = read_vcpu_stats(post)
        if vb is None or va is None or 0 not in vb or 0 not in va:
            unavailable.update(("sender_exits", "sender_hypercalls", "vcpu_sum_exits"))
        else:
            boot["vcpu_source"] = src
            counters["sender_exits"] += va[0].get("exits", 0) - vb[0].get("exits", 0)
            counters["sender_hypercalls"] += va[0].get("hypercalls", 0) - vb[0].get("hypercalls", 0)
            vcpu_sum_exits += sum(va[k].get("exits", 0) - vb[k].get("exits", 0) for k in va if k in vb)
        tb, ta = read_text(pre + ".t"), read_text(post + ".t")
        try:
            window.append((int(ta) - int(tb)) / 100.0)
        except (TypeError, ValueError):
            pass
    # IPIs sent: ICR writes (ICR2 too: xAPIC writes it separately, one trap each) and SEND_IPI.
    if "sender_apic_writes_by_reg" in unavailable or "sender_hypercalls_by_nr" in unavailable:
        unavailable.add("send_exits")
    else:
        counters["send_exits"] = (
            sender_breakdowns["apic_writes_by_reg"].get(0x300, 0)
            + sender_breakdowns["apic_writes_by_reg"].get(0x310, 0)
            + sender_breakdowns["hypercalls_by_nr"].get(10, 0)
        )
    if "ipis_by_vector" in unavailable:
        unavailable.add("call_ipis")
    else:
        counters["call_ipis"] = breakdowns["ipis_by_vector"].get(0xFB, 0) + breakdowns["ipis_by_vector"].get(0xFC, 0)
    if "sender_ipis_by_vector" in unavailable:
        unavailable.add("multicast_sends")
    else:
        counters["multicast_sends"] = sender_breakdowns["ipis_by_vector"].get(0xFC, 0)
    if "apic_writes_by_reg" in unavailable or "hypercalls_by_nr" in unavailable:
        unavailable.add("ipi_sends")
    else:
        counters["ipi_sends"] = breakdowns["apic_writes_by_reg"].get(0x300, 0) + breakdowns["hypercalls_by_nr"].get(10, 0)
    for c in unavailable:
        if c in counters:
            counters[c] = None
    ops = sum(w["ops"] for w in works)
    secs = sum(w["seconds"] for w in works)

    def per_op(x):
        return x / ops if (x is not None and ops > 0) else None

    return {
        "ops": ops,
        # Throughput of the scenario: all VMs together.
        "per_s": sum(w["per_s"] for w in works),
        # Time per operation as each guest sees it, averaged over the VMs by operation.
        "ns_per_op": secs * 1e9 / ops if ops > 0 else None,
        "seconds": secs / len(works),
        "window_s": statistics.mean(window) if window else None,
        "per_vm_per_s": [w["per_s"] for w in works],
        "counters": counters,
        "per_op": {c: per_op(v) for c, v in counters.items()},
        "vcpu_sum_exits": None if "vcpu_sum_exits" in unavailable else vcpu_sum_exits,
        "breakdown_per_op": {
            name: None if name in unavailable else {str(k): per_op(v) for k, v in sorted(breakdowns[name].items())}
            for name in BREAKDOWNS.values()
        },
        "guest_irqs_per_op": None if "guest_irqs" in unavailable else {k: per_op(v) for k, v in sorted(guest_irqs.items())},
        "sender_breakdown_per_op": {
            name: None if "sender_" + name in unavailable else {str(k): per_op(v) for k, v in sorted(sender_breakdowns[name].items())}
            for name in BREAKDOWNS.values()
        },
    }


# ----------------------------------------------------------------------------- statistics


def summary(values):
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None
    return {"n": len(vals), "min": min(vals), "median": statistics.median(vals), "max": max(vals)}


def med(s):
    return s["median"] if s else None


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def build_cells(boots):
    """{(scenario, kind, config): {"runs": [...], "summary": {...}}}"""
    cells = {}
    for boot in boots:
        for kind, run in boot["runs"].items():
            key = (boot["scenario"], kind, boot["config"])
            cells.setdefault(key, {"runs": []})["runs"].append(dict(run, round=boot["round"]))
    for cell in cells.values():
        runs = cell["runs"]
        cell["summary"] = {
            "per_s": summary([r["per_s"] for r in runs]),
            "ns_per_op": summary([r["ns_per_op"] for r in runs]),
            "per_op": {c: summary([r["per_op"].get(c) for r in runs]) for c in COUNTER_NAMES},
            "breakdown_per_op": breakdown_summary(runs, "breakdown_per_op"),
            "sender_breakdown_per_op": breakdown_summary(runs, "sender_breakdown_per_op"),
            "guest_irqs_per_op": irq_summary(runs),
        }
    return cells


def breakdown_summary(runs, field):
    """Median over the runs of each key of a breakdown (exit reason, hypercall, register)."""
    out = {}
    for name in BREAKDOWNS.values():
        dicts = [r[field][name] for r in runs if r.get(field) and r[field].get(name) is not None]
        if not dicts:
            out[name] = None
            continue
        keys = sorted(set().union(*dicts), key=int)
        out[name] = {k: statistics.median([x.get(k, 0) for x in dicts]) for k in keys}
    return out


def irq_summary(runs):
    """Median over the runs of the guest's interrupts per operation, by kind."""
    dicts = [r["guest_irqs_per_op"] for r in runs if r.get("guest_irqs_per_op")]
    if not dicts:
        return None
    keys = sorted(set().union(*dicts))
    return {k: statistics.median([x.get(k, 0) for x in dicts]) for k in keys}


def top_irqs(cells, scen, kind, cfg, n=4):
    cell = cells.get((scen, kind, cfg))
    b = cell["summary"].get("guest_irqs_per_op") if cell else None
    if not b:
        return "–"
    items = sorted(b.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {fmt(v)}" for k, v in items if v > 0) or "none"


def breakdown_value(cells, scen, kind, cfg, name, key, field="breakdown_per_op"):
    """Median per op of one key of a breakdown (e.g. IPIs with vector 0xec), or None."""
    cell = cells.get((scen, kind, cfg))
    b = cell["summary"][field].get(name) if cell else None
    if b is None:
        return None
    return b.get(str(key), 0)


def timer_ipis(cells, scen, kind, cfgs):
    """Timer-broadcast IPIs (LOCAL_TIMER vector) the VM sent per op, per configuration."""
    return {cfg: breakdown_value(cells, scen, kind, cfg, "ipis_by_vector", 0xEC) for cfg in cfgs}


def top_keys(cells, scen, kind, cfg, field, name, vendor, n=5):
    """The N largest entries of a breakdown (median per op), as 'NAME x' strings."""
    cell = cells.get((scen, kind, cfg))
    b = cell["summary"][field].get(name) if cell else None
    if not b:
        return "–"
    items = sorted(b.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{key_name(name, int(k), vendor)} {fmt(v)}" for k, v in items if v > 0) or "none"


def paired_ratios(cells, scenario, kind, num, den, metric):
    """Per-round ratios num/den of METRIC (same round: interleaved neighbours)."""
    a = {r["round"]: r[metric] for r in cells.get((scenario, kind, num), {}).get("runs", [])}
    b = {r["round"]: r[metric] for r in cells.get((scenario, kind, den), {}).get("runs", [])}
    return [ratio(a[k], b[k]) for k in sorted(a) if k in b and ratio(a[k], b[k]) is not None]


def build_ratios(cells, scenarios):
    """On/off (or dedicated/default, dedicated/bare) ratios for every VMM, per workload."""
    out = []
    for scen in scenarios:
        for kind in scenarios[scen]:
            if scen == "dedicated":
                pairs = [(vmm, p + "dedicated", p + "default", "dedicated/default") for vmm, p in VMMS]
                pairs += [(vmm, p + "dedicated", "bare", "dedicated/bare host") for vmm, p in VMMS]
            else:
                pairs = [(vmm, p + "on", p + "off", "on/off") for vmm, p in VMMS]
            for vmm, num, den, label in pairs:
                cn, cd = cells.get((scen, kind, num)), cells.get((scen, kind, den))
                if not cn or not cd:
                    continue
                entry = {
                    "scenario": scen,
                    "kind": kind,
                    "vmm": vmm,
                    "ratio": label,
                    "numerator": num,
                    "denominator": den,
                    "throughput": ratio(med(cn["summary"]["per_s"]), med(cd["summary"]["per_s"])),
                    "time_per_op": ratio(med(cn["summary"]["ns_per_op"]), med(cd["summary"]["ns_per_op"])),
                    "throughput_paired": summary(paired_ratios(cells, scen, kind, num, den, "per_s")),
                    "time_per_op_paired": summary(paired_ratios(cells, scen, kind, num, den, "ns_per_op")),
                    "exits_per_op": ratio(
                        med(cn["summary"]["per_op"]["exits"]), med(cd["summary"]["per_op"]["exits"])
                    ),
                }
                out.append(entry)
    return out


def find_ratio(ratios, scen, kind, vmm, label):
    for r in ratios:
        if r["scenario"] == scen and r["kind"] == kind and r["vmm"] == vmm and r["ratio"] == label:
            return r
    return None


def fmt(x, digits=2):
    if x is None:
        return "–"
    if isinstance(x, int):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits}f}"


def fmt_factor(x):
    """How far a value is on the wrong side of its threshold: '1.55x', or, when that would
    round to 1.00x, the percentage ('0.4%')."""
    if x is None:
        return "–"
    if x < 1.005:
        return f"{(x - 1) * 100:.1f}%"
    return f"{fmt(x)}x"


def fmt_time(ns):
    if ns is None:
        return "–"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def cell_per_op(cells, scen, kind, cfg, counter):
    c = cells.get((scen, kind, cfg))
    return med(c["summary"]["per_op"][counter]) if c else None


def build_targets(cells, ratios, scenarios, emulated, vendor):
    """Each target of the issue, judged on the medians of this run: measured, threshold,
    met or missed and by how much, and the counters that explain it."""
    targets = []

    def verdict(value, threshold, higher_is_better):
        """(met, factor): factor > 1 says how far the value is on the wrong side."""
        if value is None or threshold is None:
            return None, None
        met = value >= threshold if higher_is_better else value <= threshold
        if value == 0 or threshold == 0:
            return met, None
        return met, (threshold / value if higher_is_better else value / threshold)

    def per_op(scen, kind, cfgs, names):
        return {cfg: {c: cell_per_op(cells, scen, kind, cfg, c) for c in names} for cfg in cfgs}

    def breakdowns(scen, kind, cfgs):
        return {
            cfg: {
                "sender_exits_by_reason": top_keys(cells, scen, kind, cfg, "sender_breakdown_per_op", "exits_by_reason", vendor),
                "exits_by_reason": top_keys(cells, scen, kind, cfg, "breakdown_per_op", "exits_by_reason", vendor),
                "hypercalls_by_nr": top_keys(cells, scen, kind, cfg, "breakdown_per_op", "hypercalls_by_nr", vendor),
            }
            for cfg in cfgs
        }

    onoff = ("pv-vmm-on", "pv-vmm-off", "qemu-on", "qemu-off", "ch-on", "ch-off")
    ch = "Cloud Hypervisor"

    def ratio_of(scen, kind, vmm, label, metric):
        r = find_ratio(ratios, scen, kind, vmm, label)
        return r[metric] if r else None
    # 1. PV TLB flush under overcommit, for pv-vmm, against 1.5 and against QEMU's own ratio.
    for scen in [s for s in ("overcommit2", "overcommit3") if s in scenarios and "tlb" in scenarios[s]]:
        ours = find_ratio(ratios, scen, "tlb", "pv-vmm", "on/off")
        theirs = find_ratio(ratios, scen, "tlb", "QEMU", "on/off")
        value = ours["throughput"] if ours else None
        qemu_value = theirs["throughput"] if theirs else None
        met_abs, by_abs = verdict(value, 1.5, True)
        met_q, by_q = verdict(value, qemu_value, True)
        met = None if met_abs is None else (met_abs and met_q is not False)
        targets.append({
            "id": "tlb_overcommit",
            "scenario": scen,
            "text": TARGETS_TEXT["tlb_overcommit"],
            "metric": "tlb throughput, PV on/off (medians)",
            "pv_vmm": value,
            "qemu": qemu_value,
            "ch": ratio_of(scen, "tlb", ch, "on/off", "throughput"),
            "threshold": f">= 1.5 and >= QEMU's {fmt(qemu_value)}",
            "met": met,
            "short_by": {"vs_1.5": by_abs if met_abs is False else None, "vs_qemu": by_q if met_q is False else None},
            "paired": ours["throughput_paired"] if ours else None,
            "qemu_paired": theirs["throughput_paired"] if theirs else None,
            "counters_per_op": per_op(scen, "tlb", onoff, ("exits", "ipi_sends", "call_ipis", "send_exits", "pv_flush_requests", "tlb_flush", "preemption_reported", "hypercalls")),
            "throughput": {cfg: med(cells[(scen, "tlb", cfg)]["summary"]["per_s"]) if (scen, "tlb", cfg) in cells else None for cfg in onoff},
            "breakdowns": breakdowns(scen, "tlb", onoff),
        })

    # 2./3. PV send-IPI where a multicast has several destinations (the oversubscribed VM).
    # ipi-mask is the multicast PV send-IPI applies to; ipi (all but self) goes by shorthand.
    ipi_scen, ipi_kind = next(((s, k) for k in ("ipi-mask", "ipi") for s in ("oversub", "overcommit3", "overcommit2")
                               if s in scenarios and k in scenarios[s]), (None, None))
    if ipi_scen:
        counters = per_op(ipi_scen, ipi_kind, onoff, ("multicast_sends", "send_exits", "sender_exits", "sender_hypercalls", "exits", "ipi_sends", "hypercalls", "irq_exits", "halt_exits", "preemption_reported"))
        shorthand = per_op(ipi_scen, "ipi", onoff, ("multicast_sends",)) if ipi_kind != "ipi" else None
        value = counters["pv-vmm-on"]["multicast_sends"]
        met, by = verdict(value, 1.0, False)
        targets.append({
            "id": "ipi_exits",
            "scenario": ipi_scen,
            "text": TARGETS_TEXT["ipi_exits"],
            "kind": ipi_kind,
            "metric": f"{ipi_kind}: exits of the sending vCPU that send the multicast, per multicast (PV on, median)",
            "pv_vmm": value,
            "qemu": counters["qemu-on"]["multicast_sends"],
            "ch": counters["ch-on"]["multicast_sends"],
            "threshold": "<= 1",
            "met": met,
            "short_by": {"factor": by if met is False else None},
            "counters_per_op": counters,
            "shorthand_counters_per_op": shorthand,
            "breakdowns": breakdowns(ipi_scen, ipi_kind, onoff),
        })
        ours = find_ratio(ratios, ipi_scen, ipi_kind, "pv-vmm", "on/off")
        theirs = find_ratio(ratios, ipi_scen, ipi_kind, "QEMU", "on/off")
        value = ours["time_per_op"] if ours else None
        met, by = verdict(value, 0.5, False)
        times = {cfg: med(cells[(ipi_scen, ipi_kind, cfg)]["summary"]["ns_per_op"]) if (ipi_scen, ipi_kind, cfg) in cells else None for cfg in onoff}
        targets.append({
            "id": "ipi_time",
            "scenario": ipi_scen,
            "kind": ipi_kind,
            "text": TARGETS_TEXT["ipi_time"],
            "metric": f"{ipi_kind}: time per multicast, PV on/off (medians)",
            "pv_vmm": value,
            "qemu": theirs["time_per_op"] if theirs else None,
            "ch": ratio_of(ipi_scen, ipi_kind, ch, "on/off", "time_per_op"),
            "threshold": "<= 0.5",
            "met": met,
            "short_by": {"factor": by if met is False else None},
            "paired": ours["time_per_op_paired"] if ours else None,
            "time_per_op_ns": times,
            "counters_per_op": counters,
            "breakdowns": breakdowns(ipi_scen, ipi_kind, onoff),
        })

    # 4./5. Dedicated wake-up round trips.
    if "dedicated" in scenarios and "pingpong" in scenarios["dedicated"]:
        ded = ("pv-vmm-default", "pv-vmm-dedicated", "qemu-default", "qemu-dedicated", "ch-default", "ch-dedicated")
        counters = per_op("dedicated", "pingpong", ded, ("exits", "sender_exits", "send_exits", "halt_exits", "hypercalls", "irq_exits", "irq_window_exits"))
        times = {cfg: med(cells[("dedicated", "pingpong", cfg)]["summary"]["ns_per_op"]) if ("dedicated", "pingpong", cfg) in cells else None for cfg in ded + ("bare",)}
        for tid, label, threshold in (("dedicated_vs_default", "dedicated/default", 0.5), ("dedicated_vs_bare", "dedicated/bare host", 1.5)):
            ours = find_ratio(ratios, "dedicated", "pingpong", "pv-vmm", label)
            theirs = find_ratio(ratios, "dedicated", "pingpong", "QEMU", label)
            value = ours["time_per_op"] if ours else None
            met, by = verdict(value, threshold, False)
            targets.append({
                "id": tid,
                "scenario": "dedicated",
                "text": TARGETS_TEXT[tid],
                "metric": f"round-trip time, {label} (medians)",
                "pv_vmm": value,
                "qemu": theirs["time_per_op"] if theirs else None,
                "ch": ratio_of("dedicated", "pingpong", ch, label, "time_per_op"),
                "threshold": f"<= {threshold}",
                "met": met,
                "short_by": {"factor": by if met is False else None},
                "paired": ours["time_per_op_paired"] if ours else None,
                "time_per_op_ns": times,
                "counters_per_op": counters,
                "breakdowns": breakdowns("dedicated", "pingpong", ded),
            })
    for t in targets:
        cfgs = tuple(t.get("counters_per_op", {}))
        if t.get("kind") or t["id"] in ("dedicated_vs_default", "dedicated_vs_bare", "tlb_overcommit"):
            kind = t.get("kind") or ("tlb" if t["id"] == "tlb_overcommit" else "pingpong")
            t["timer_ipis_per_op"] = timer_ipis(cells, t["scenario"], kind, cfgs)
        t["why"] = explain(t, emulated)
    return targets


LAB_LIMITS = (
    "Nested virtualization in the lab: the host is L1, itself emulated by QEMU's TCG in L0 (SVM "
    "included), so every exit of an L2 guest, every VMRUN and every interrupt injection is "
    "emulated instruction by instruction: an exit costs tens of microseconds instead of about "
    "one, and L1's vCPUs are threads that L0 deschedules at will. Costs that scale with exits "
    "shrink with PV as they would on hardware, but everything else a guest operation waits for "
    "(the host scheduler, a preempted target vCPU) is stretched as well."
)


def explain(t, emulated):
    """Why a target is met or missed, from the counters (sentences for the report)."""
    c = t.get("counters_per_op", {})
    b = t.get("breakdowns", {})
    out = []
    if t["id"] == "tlb_overcommit":
        on, off, qon, qoff = (c.get(k, {}) for k in ("pv-vmm-on", "pv-vmm-off", "qemu-on", "qemu-off"))
        out.append(
            f"Per unmap, pv-vmm with PV off sent {fmt(off.get('call_ipis'))} shootdown (function-call) IPIs and took "
            f"{fmt(off.get('exits'))} exits; with PV TLB flush the unmapping vCPU skipped preempted vCPUs, asking for "
            f"{fmt(on.get('pv_flush_requests'))} flushes per unmap through their steal-time record instead, and sent "
            f"{fmt(on.get('call_ipis'))} shootdown IPIs with {fmt(on.get('exits'))} exits (QEMU: {fmt(qoff.get('call_ipis'))} IPIs "
            f"and {fmt(qoff.get('exits'))} exits off; {fmt(qon.get('pv_flush_requests'))} flush requests, "
            f"{fmt(qon.get('call_ipis'))} IPIs and {fmt(qon.get('exits'))} exits on)."
        )
        tp = t.get("throughput") or {}
        out.append(
            f"In unmaps/s (medians): pv-vmm {fmt(tp.get('pv-vmm-on'))} on, {fmt(tp.get('pv-vmm-off'))} off; QEMU "
            f"{fmt(tp.get('qemu-on'))} on, {fmt(tp.get('qemu-off'))} off"
            + (
                f": with PV on pv-vmm reaches {fmt(ratio(tp.get('pv-vmm-on'), tp.get('qemu-on')))}x QEMU's throughput, with PV off "
                f"{fmt(ratio(tp.get('pv-vmm-off'), tp.get('qemu-off')))}x, so part of pv-vmm's higher on/off ratio is its slower "
                f"PV-off baseline, not a better PV TLB flush."
                if ratio(tp.get("pv-vmm-off"), tp.get("qemu-off")) is not None and ratio(tp.get("pv-vmm-off"), tp.get("qemu-off")) < 0.9
                else "."
            )
        )
        if t["met"] is False:
            if t["short_by"].get("vs_1.5"):
                out.append(f"The ratio {fmt(t['pv_vmm'])} is {fmt_factor(t['short_by']['vs_1.5'])} short of 1.5.")
            if t["short_by"].get("vs_qemu"):
                p, q = t.get("paired") or {}, t.get("qemu_paired") or {}
                overlap = p and q and p["max"] >= q["min"]
                out.append(
                    f"It is {fmt_factor(t['short_by']['vs_qemu'])} below QEMU's {fmt(t['qemu'])}. Per round, pv-vmm's ratio ranged "
                    f"{fmt(p.get('min'))}–{fmt(p.get('max'))} and QEMU's {fmt(q.get('min'))}–{fmt(q.get('max'))}"
                    + (": the ranges overlap, so the gap is within the run-to-run spread of the emulated host, "
                       "and the counters per unmap show both VMMs using the same mechanism equally."
                       if overlap else ": the ranges do not overlap.")
                )
    elif t["id"] == "ipi_exits":
        on, off, qon, qoff = (c.get(k, {}) for k in ("pv-vmm-on", "pv-vmm-off", "qemu-on", "qemu-off"))
        out.append(
            f"Exits that send the multicast (function-call vector, on the sending vCPU) per {t['kind']} operation: "
            f"pv-vmm {fmt(on.get('multicast_sends'))} with PV send-IPI (all hypercalls of that vCPU, sched yield and timer "
            f"IPIs included: {fmt(on.get('sender_hypercalls'))} per op), {fmt(off.get('multicast_sends'))} without (one ICR "
            f"write per destination); QEMU "
            f"{fmt(qon.get('multicast_sends'))} and {fmt(qoff.get('multicast_sends'))}."
        )
        sh = t.get("shorthand_counters_per_op")
        if sh:
            out.append(
                f"For comparison, the all-but-self multicast (ipi) costs {fmt(sh.get('pv-vmm-on', {}).get('multicast_sends'))} "
                f"exit on and {fmt(sh.get('pv-vmm-off', {}).get('multicast_sends'))} off: Linux sends it with the x2APIC "
                f"shorthand (PV send-IPI does not replace that path), one ICR write either way."
            )
        out.append(
            f"The sending vCPU's other exits per operation are not sends: {fmt(on.get('sender_exits'))} exits in all "
            f"(PV on; by reason: {b.get('pv-vmm-on', {}).get('sender_exits_by_reason', '–')}), host interrupts, interrupt "
            f"windows and timer writes while membarrier waits for its targets."
        )
        if t["met"] is False:
            v = t["pv_vmm"] or 0
            if v < 1.1:
                out.append(
                    f"{fmt(v)} is {fmt_factor(t['short_by']['factor'])} over the target of 1: each membarrier went out as one SEND_IPI "
                    f"hypercall; the {fmt(v - 1)} per operation above 1 are other function-call multicasts vCPU 0 sent in "
                    f"the same window (the count is by vector and thread, not by caller)."
                )
            else:
                out.append(f"{fmt(v)} sending exits per multicast is {fmt_factor(t['short_by']['factor'])} over the target of 1.")
    elif t["id"] == "ipi_time":
        on, off = c.get("pv-vmm-on", {}), c.get("pv-vmm-off", {})
        times = t.get("time_per_op_ns", {})
        out.append(
            f"Time per multicast ({t['kind']}): pv-vmm {fmt_time(times.get('pv-vmm-on'))} on, {fmt_time(times.get('pv-vmm-off'))} "
            f"off; QEMU {fmt_time(times.get('qemu-on'))} on, {fmt_time(times.get('qemu-off'))} off. PV send-IPI saved "
            f"{fmt((off.get('multicast_sends') or 0) - (on.get('multicast_sends') or 0))} sending exits per multicast, while "
            f"the VM's vCPUs were preempted {fmt(on.get('preemption_reported'))} times per multicast (PV on; "
            f"{fmt(off.get('preemption_reported'))} off)."
        )
        if t["met"] is False:
            out.append(
                f"On/off is {fmt(t['pv_vmm'])}, {fmt_factor(t['short_by']['factor'])} above 0.5: with twice as many vCPUs as host "
                f"CPUs and a busy loop beside them, membarrier waits until every target vCPU has run its IPI handler, that is "
                f"until the host scheduler runs each preempted target; PV send-IPI removes exits on the sender, not that "
                f"wait, which dominates the time per multicast here."
            )
    elif t["id"].startswith("dedicated"):
        d, f = c.get("pv-vmm-dedicated", {}), c.get("pv-vmm-default", {})
        rt = t.get("time_per_op_ns", {})
        out.append(
            f"Round trips: bare host {fmt_time(rt.get('bare'))}; pv-vmm default {fmt_time(rt.get('pv-vmm-default'))}, "
            f"dedicated {fmt_time(rt.get('pv-vmm-dedicated'))}; QEMU default {fmt_time(rt.get('qemu-default'))}, "
            f"dedicated {fmt_time(rt.get('qemu-dedicated'))}. Per round trip, pv-vmm default: {fmt(f.get('halt_exits'))} HLT "
            f"exits of {fmt(f.get('exits'))} exits; dedicated: {fmt(d.get('halt_exits'))} HLT exits of {fmt(d.get('exits'))} "
            f"(by reason: {b.get('pv-vmm-dedicated', {}).get('exits_by_reason', '–')})."
        )
        if t["met"] is False:
            if t["id"] == "dedicated_vs_default":
                out.append(
                    f"{fmt(t['pv_vmm'])} is {fmt_factor(t['short_by']['factor'])} above 0.5: dedicated removes the HLT exits and "
                    f"the host-side halt, but every wake-up still needs the waker's sending exit and an exit of the target "
                    f"to take the interrupt, and in the lab each of those is an emulated world switch that costs more "
                    f"than the halt it replaces."
                )
            else:
                out.append(
                    f"{fmt(t['pv_vmm'])} is {fmt_factor(t['short_by']['factor'])} above 1.5: on the bare host (L1) a wake-up is an IPI "
                    f"between L1's vCPUs; in the guest each one costs the exits counted above, each an emulated VM exit and "
                    f"entry, so the nested guest cannot come near the host here."
                )
    ti = t.get("timer_ipis_per_op") or {}
    ours = max((v for k, v in ti.items() if k.startswith("pv-vmm") and v is not None), default=None)
    theirs = max((v for k, v in ti.items() if k.startswith("qemu") and v is not None), default=None)
    if ours is not None and ours >= 0.1 and (theirs is None or ours > 2 * theirs):
        out.append(
            f"pv-vmm's guest also sent up to {fmt(ours)} timer-broadcast IPIs (LOCAL_TIMER vector) per operation here, "
            f"QEMU's {fmt(theirs)}: a guest that ticks through a broadcast device (its local APIC timer without "
            f"TSC-deadline mode) wakes idle vCPUs for their timers with these IPIs; each guest's tick devices are under "
            f"\"What the guests saw\"."
        )
    return " ".join(out)


# ----------------------------------------------------------------------------- plots


def plot_all(cells, ratios, scenarios, out_dir, emulated):
    """PNG plots: per scenario throughput (min/median/max) and exits per op; the ratios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {
        "pv-vmm-on": "#1f77b4", "pv-vmm-off": "#aec7e8", "qemu-on": "#d62728", "qemu-off": "#ff9896",
        "pv-vmm-default": "#aec7e8", "pv-vmm-dedicated": "#1f77b4", "qemu-default": "#ff9896",
        "qemu-dedicated": "#d62728", "ch-on": "#9467bd", "ch-off": "#c5b0d5", "ch-default": "#c5b0d5",
        "ch-dedicated": "#9467bd", "bare": "#2ca02c",
    }
    files = []
    suffix = " (emulated: KVM lab)" if emulated else ""
    for scen in [s for s in SCENARIO_ORDER if s in scenarios]:
        kinds = [k for k in KIND_ORDER if k in scenarios[scen]]
        cfgs = [c for c in CONFIG_ORDER if any((scen, k, c) in cells for k in kinds)]
        if not cfgs:
            continue
        fig, axes = plt.subplots(2, len(kinds), figsize=(3.6 * len(kinds) + 1, 6.4), squeeze=False)
        for col, kind in enumerate(kinds):
            for row, (metric, label) in enumerate(((("per_s", None), KINDS[kind][0]), (("per_op", "exits"), "exits per op"))):
                ax = axes[row][col]
                xs, meds, lo, hi, cs = [], [], [], [], []
                for i, cfg in enumerate(cfgs):
                    cell = cells.get((scen, kind, cfg))
                    s = None
                    if cell:
                        s = cell["summary"][metric[0]] if metric[1] is None else cell["summary"]["per_op"][metric[1]]
                    if not s:
                        continue
                    xs.append(i)
                    meds.append(s["median"])
                    lo.append(s["median"] - s["min"])
                    hi.append(s["max"] - s["median"])
                    cs.append(colors[cfg])
                ax.bar(xs, meds, color=cs, yerr=[lo, hi], capsize=3, ecolor="black")
                ax.set_xticks(range(len(cfgs)))
                ax.set_xticklabels([c.replace("pv-vmm-", "pv-vmm\n").replace("qemu-", "QEMU\n").replace("ch-", "CH\n") for c in cfgs],
                                   fontsize=7)
                ax.set_ylabel(label, fontsize=8)
                ax.tick_params(axis="y", labelsize=7)
                if row == 0:
                    ax.set_title(kind, fontsize=10)
                if kind in ("pingpong",) and scen == "dedicated" and row == 0:
                    ax.set_yscale("log")
        fig.suptitle(f"{scen}: throughput and exits per operation, median with min–max{suffix}", fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        name = f"{scen}.png"
        fig.savefig(os.path.join(out_dir, name), dpi=110)
        plt.close(fig)
        files.append(name)

    # Ratios: on/off (throughput) per scenario and workload, the VMMs side by side.
    rows = [r for r in ratios if r["ratio"] in ("on/off", "dedicated/default")]
    if rows:
        labels = sorted({(r["scenario"], r["kind"]) for r in rows}, key=lambda k: (SCENARIO_ORDER.index(k[0]), KIND_ORDER.index(k[1])))
        vmms = [vmm for vmm, _ in VMMS if any(r["vmm"] == vmm for r in rows)]
        fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(vmms) * len(labels) + 2), 4.2))
        width = 0.8 / len(vmms)
        bar_colors = {"pv-vmm": "#1f77b4", "QEMU": "#d62728", "Cloud Hypervisor": "#9467bd"}
        for j, vmm in enumerate(vmms):
            vals, errs_lo, errs_hi = [], [], []
            for scen, kind in labels:
                label = "dedicated/default" if scen == "dedicated" else "on/off"
                r = find_ratio(rows, scen, kind, vmm, label)
                v = r["throughput"] if r else None
                p = r["throughput_paired"] if r else None
                vals.append(v if v is not None else 0)
                errs_lo.append(max(0, v - p["min"]) if (v is not None and p) else 0)
                errs_hi.append(max(0, p["max"] - v) if (v is not None and p) else 0)
            ax.bar([i + (j - (len(vmms) - 1) / 2) * width for i in range(len(labels))], vals, width, yerr=[errs_lo, errs_hi],
                   capsize=3, label=vmm, color=bar_colors[vmm])
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.axhline(1.5, color="green", lw=0.8, ls="--", label="TLB target 1.5x")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels([f"{s}\n{k}" for s, k in labels], fontsize=7)
        ax.set_ylabel("throughput ratio (on/off; dedicated/default)", fontsize=8)
        ax.set_yscale("log")
        ax.legend(fontsize=8)
        ax.set_title(f"PV on/off throughput ratios, medians; whiskers: per-round ratios{suffix}", fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "ratios.png"), dpi=110)
        plt.close(fig)
        files.append("ratios.png")
    return files


# ----------------------------------------------------------------------------- report


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


def sh_quote(arg):
    if re.fullmatch(r"[A-Za-z0-9_./=:,+@%-]+", arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


def write_report(res, cells, ratios, targets, plots, out_dir, path_for):
    emulated = res["emulated"]
    with_ch = any(cfg.startswith("ch-") for (_, _, cfg) in cells)
    L = []
    L.append("# PV features benchmark: pv-vmm, QEMU" + (" and Cloud Hypervisor" if with_ch else " and Cloud Hypervisor (not run)")
             + ", PV on and off")
    L.append("")
    L.append(f"Generated by `{res['command']}` from the run started {res['run_started']} (report written {res['generated']}; git {res['pv_vmm']['git']}"
             f"{', uncommitted changes' if res['pv_vmm']['dirty'] else ''}); regenerate it with `scripts/bench`, do not edit it by hand.")
    L.append("")
    if emulated:
        L.append("> **Timings are emulated.** This run was made in the KVM lab: the \"host\" is L1, a Linux "
                 "under QEMU TCG with an emulated SVM whose `kvm_amd` is a real KVM, and the guests are L2. "
                 "Absolute times mean nothing; counts per operation and ratios within this run do. "
                 "On a host with hardware virtualization the same command measures real timings.")
        L.append("")
    L.append("## Summary: the targets")
    L.append("")
    rows = []
    for t in targets:
        verdict = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        short = ""
        if t["met"] is False:
            parts = []
            for k, v in t["short_by"].items():
                if v:
                    parts.append(f"{fmt_factor(v)} {'short of 1.5' if k == 'vs_1.5' else 'below QEMU' if k == 'vs_qemu' else 'over the limit'}")
            short = "; ".join(parts)
        rows.append([t["text"], t["scenario"], t["metric"], fmt(t["pv_vmm"]), fmt(t["qemu"])]
                    + ([fmt(t.get("ch"))] if with_ch else []) + [t["threshold"], verdict, short])
    L.append(md_table(["target", "scenario", "measure", "pv-vmm", "QEMU"] + (["Cloud Hypervisor"] if with_ch else [])
                      + ["threshold", "verdict", "by how much"], rows))
    L.append("")
    L.append("The verdict is pv-vmm's" + ("; Cloud Hypervisor's column is the same measure of the patched Cloud Hypervisor "
             "(patches/cloud-hypervisor/), against the same threshold." if with_ch else "."))
    L.append("")
    for t in targets:
        L.append(f"- **{t['id']}** ({t['scenario']}): {t['why']}")
    L.append("")
    if emulated and any(t["met"] is False for t in targets):
        L.append(f"**Why the lab misses what it misses.** {LAB_LIMITS}")
        L.append("")
    L.append("On/off ratios (medians of the cells; in brackets the range of the per-round ratios, each from one "
             "interleaved pair of boots):")
    L.append("")
    rows = []
    for r in ratios:
        tp = r["throughput_paired"]
        rows.append([r["scenario"], r["kind"], r["vmm"], r["ratio"], fmt(r["throughput"]),
                     f"{fmt(tp['min'])}–{fmt(tp['max'])}" if tp else "–", fmt(r["time_per_op"]), fmt(r["exits_per_op"])])
    L.append(md_table(["scenario", "workload", "VMM", "ratio", "throughput", "per round", "time per op", "exits per op"], rows))
    L.append("")
    if res["failures"]:
        L.append("## Failed boots")
        L.append("")
        for f in res["failures"]:
            L.append(f"- round {f['round']}, {f['scenario']}, {f['config']}: {f.get('reason', f['result'])}")
        L.append("")
    if res["retries"]:
        L.append("## Boots run again")
        L.append("")
        L.append("These boots failed (a guest ended, was not ready in time, or did not finish a workload; in the lab "
                 "its L2 fault, which comes to every VMM's guests before and after they are up, or L1 crashing under "
                 "a whole round), so the boot, or the round, ran again: each failed attempt's figures were "
                 "dropped whole and the figures above are the last attempt's. The console and stderr tails of each "
                 "failed attempt are in the run's stderr.txt:")
        L.append("")
        for r in res["retries"]:
            L.append(f"- round {r['round']}, {r['scenario']}, {r['config']}: {r.get('reason')}")
        L.append("")
    L.append("## How this was measured")
    L.append("")
    i = res["host"]
    L.append(f"- Where: {'the KVM lab (L1 under QEMU TCG; timings emulated)' if emulated else 'directly on this host (hardware KVM)'}; "
             f"the machine running `scripts/bench`: {res['outer_host']}.")
    L.append(f"- Host of the VMs: Linux {i.get('kernel_release')}, {i.get('cpus')} CPUs ({i.get('cpu_model')}), "
             f"{i.get('kvm_module')}, {int(i.get('mem_total_kb') or 0) // 1024} MiB, KVM halt_poll_ns {i.get('halt_poll_ns')}.")
    ch_line = ""
    if res.get("ch"):
        ch_line = (f"; {i.get('ch_version')} with this project's series (patches/cloud-hypervisor/, built by "
                   f"`scripts/build-cloud-hypervisor --profile {res['ch']['profile']}`)")
    L.append(f"- VMMs: {i.get('pv_vmm_version')} (git {res['pv_vmm']['git']}, sha256 {res['pv_vmm']['sha256'][:16]}…); "
             f"{i.get('qemu_version')}{ch_line}.")
    L.append(f"- Guest: the Debian cloud kernel `{os.path.basename(res['guest']['kernel'])}` and the initramfs of "
             f"`scripts/build-guest-initramfs --init scripts/bench-lib/guest-init.sh` (busybox, `/bin/pv-load`), "
             f"512 MiB per VM, the same kernel command line for every VMM.")
    L.append(f"- {res['settings']['runs']} round(s); in each, every scenario and configuration once, interleaved "
             f"(pv-vmm, QEMU{', Cloud Hypervisor' if with_ch else ''}, pv-vmm, ...); {res['settings']['seconds']} s per workload; all VMs of a scenario "
             "run the workload at the same moment (the host releases them together) and the host reads each VM's "
             "counters right before and right after it. Cells show min/median/max over the rounds.")
    L.append("- PV **on** = each VMM's default (pv-vmm and Cloud Hypervisor `--cpus boot=N`: every feature the host supports; "
             "QEMU `-cpu host`). "
             "PV **off** = the four scalability features off and the rest kept (kvmclock, steal time, PV EOI, async PF), "
             "in every VMM alike: pv-vmm and Cloud Hypervisor `kvm_pv=[` every feature but `pv_tlb_flush, pv_send_ipi, "
             "pv_sched_yield, pv_unhalt]`, "
             "QEMU `kvm-pv-tlb-flush=off,kvm-pv-ipi=off,kvm-pv-sched-yield=off,kvm-pv-unhalt=off`. Not `kvm_pv=off`/`kvm=off`: "
             "without kvmclock the guest's clock, and so the workload's own timing, would differ too.")
    L.append("- **Dedicated** = pv-vmm and Cloud Hypervisor `dedicated=on` (realtime hint, HLT/PAUSE/MWAIT/C-state exits disabled, no pv_unhalt); "
             "QEMU `-cpu host,kvm-hint-dedicated=on -overcommit cpu-pm=on`. The bare host runs the same `pv-load` directly.")
    L.append(f"- Counters: per VM, L1's debugfs `/sys/kernel/debug/kvm/<pid>-<fd>/<stat>` for every VMM (the one source read the "
             f"same way for all; sums over the VM's vCPUs); per vCPU (the sending vCPU 0), KVM's binary statistics through "
             f"the VMMs' vm.counters in Cloud Hypervisor's VmCounters shape (`pv-remote counters`, `ch-remote counters`: `kvm_vcpu<N>`) "
             f"and QEMU's QMP `query-stats`; flushes requested through the steal-time "
             f"record from the trace event `kvm:kvm_pv_tlb_flush` with need_flush_tlb=1, and exits by reason, hypercalls by number and "
             f"APIC register writes from `kvm:kvm_exit`, `kvm:kvm_hypercall`, `kvm:kvm_apic` (histogram triggers keyed by thread, "
             f"so per VM and per vCPU thread; available here: {i.get('trace_hists') or 'none'}).")
    xc = res.get("cross_check")
    if xc:
        L.append(f"- Cross-check: the per-vCPU exits summed ({xc['source_note']}) against debugfs over {xc['n']} samples: "
                 f"ratio {fmt(xc['min'], 3)}–{fmt(xc['max'], 3)} (the two are read a few milliseconds apart).")
    L.append("")
    L.append("The command lines, as run (VM 1 of each scenario and configuration; N = the scenario's vCPUs):")
    L.append("")
    L.append("```")
    L.append(res["command"])
    for key, cmd in sorted(res["commands"].items(), key=lambda kv: (SCENARIO_ORDER.index(kv[0].split("/")[0]), CONFIG_ORDER.index(kv[0].split("/")[1]))):
        L.append(f"# {key}")
        L.append(" ".join(sh_quote(a) for a in cmd))
    L.append("```")
    L.append("")
    L.append("Workloads (`integration-tests/guest/pv-load.c`):")
    L.append("")
    for k in KIND_ORDER:
        L.append(f"- `{k}`: {KINDS[k][1]}.")
    L.append("")
    L.append("Counters per operation in the tables:")
    L.append("")
    for c, text in COUNTERS:
        if c in TABLE_COUNTERS:
            L.append(f"- `{c}`: {text}.")
    L.append("")
    for scen in [s for s in SCENARIO_ORDER if s in res["settings"]["scenarios"]]:
        L.append(f"## {scen}")
        L.append("")
        L.append(SCENARIOS[scen] + ".")
        vms = res["scenario_shape"].get(scen)
        if vms:
            L.append(f"Here: {vms}.")
        L.append("")
        if f"{scen}.png" in plots:
            L.append(f"![{scen}]({path_for(scen + '.png')})")
            L.append("")
        for kind in [k for k in KIND_ORDER if k in res["settings"]["scenarios"][scen]]:
            L.append(f"### {scen} / {kind}")
            L.append("")
            rows = []
            for cfg in CONFIG_ORDER:
                cell = cells.get((scen, kind, cfg))
                if not cell:
                    continue
                s = cell["summary"]
                tp = s["per_s"]
                row = [cfg, f"{tp['n']}" if tp else "0",
                       f"{fmt(tp['min'])} / **{fmt(tp['median'])}** / {fmt(tp['max'])}" if tp else "–",
                       fmt_time(med(s["ns_per_op"]))]
                for c in TABLE_COUNTERS:
                    row.append(fmt(med(s["per_op"][c])))
                rows.append(row)
            L.append(md_table(["config", "runs", f"{KINDS[kind][0]} min / **median** / max", "time per op"] + [f"{c}/op" for c in TABLE_COUNTERS], rows))
            L.append("")
            vendor = res["host"].get("kvm_module", "")
            lines = []
            for cfg in CONFIG_ORDER:
                if (scen, kind, cfg) not in cells or cfg == "bare":
                    continue
                lines.append(
                    f"- {cfg}: exits {top_keys(cells, scen, kind, cfg, 'breakdown_per_op', 'exits_by_reason', vendor)}; "
                    f"vCPU 0 {top_keys(cells, scen, kind, cfg, 'sender_breakdown_per_op', 'exits_by_reason', vendor)}; "
                    f"hypercalls {top_keys(cells, scen, kind, cfg, 'breakdown_per_op', 'hypercalls_by_nr', vendor)}; "
                    f"APIC writes {top_keys(cells, scen, kind, cfg, 'breakdown_per_op', 'apic_writes_by_reg', vendor)}; "
                    f"IPIs sent {top_keys(cells, scen, kind, cfg, 'breakdown_per_op', 'ipis_by_vector', vendor)}; "
                    f"guest interrupts {top_irqs(cells, scen, kind, cfg)}"
                )
            if lines:
                L.append("Per operation, by kind (medians; host: trace events `kvm_exit`, `kvm_hypercall`, `kvm_apic`; "
                         "guest: its `/proc/interrupts` before and after, LOC timer, RES reschedule, CAL function call, TLB shootdown):")
                L.append("")
                L.extend(lines)
                L.append("")
            rs = [r for r in ratios if r["scenario"] == scen and r["kind"] == kind]
            if rs:
                L.append("Ratios: " + "; ".join(
                    f"{r['vmm']} {r['ratio']} throughput {fmt(r['throughput'])}, time per op {fmt(r['time_per_op'])}, exits per op {fmt(r['exits_per_op'])}"
                    for r in rs) + ".")
                L.append("")
    rows = []
    for (scen, kind, cfg), cell in sorted(cells.items(), key=lambda kv: (SCENARIO_ORDER.index(kv[0][0]), KIND_ORDER.index(kv[0][1]), CONFIG_ORDER.index(kv[0][2]))):
        if not cfg.startswith("pv-vmm-"):
            continue
        setting = cfg[len("pv-vmm-"):]
        peer, ch = "qemu-" + setting, "ch-" + setting
        other = cells.get((scen, kind, peer))
        if not other:
            continue
        chc = cells.get((scen, kind, ch))
        ti = timer_ipis(cells, scen, kind, (cfg, peer, ch))
        row = [scen, kind, setting, fmt(med(cell["summary"]["per_s"])), fmt(med(other["summary"]["per_s"])),
               fmt(ratio(med(cell["summary"]["per_s"]), med(other["summary"]["per_s"]))),
               fmt(med(cell["summary"]["per_op"]["exits"])), fmt(med(other["summary"]["per_op"]["exits"])),
               fmt(ti[cfg]), fmt(ti[peer])]
        if with_ch:
            row += [fmt(med(chc["summary"]["per_s"])) if chc else "–",
                    fmt(ratio(med(chc["summary"]["per_s"]), med(other["summary"]["per_s"]))) if chc else "–",
                    fmt(med(chc["summary"]["per_op"]["exits"])) if chc else "–", fmt(ti[ch])]
        rows.append(row)
    if rows:
        L.append("## pv-vmm" + (", Cloud Hypervisor" if with_ch else "") + " and QEMU, setting by setting")
        L.append("")
        L.append("Throughput (median ops/s), exits per operation and timer-broadcast IPIs (LOCAL_TIMER vector) per operation, "
                 "same scenario, workload and PV setting:")
        L.append("")
        L.append(md_table(["scenario", "workload", "setting", "pv-vmm ops/s", "QEMU ops/s", "pv-vmm/QEMU", "pv-vmm exits/op",
                           "QEMU exits/op", "pv-vmm timer IPIs/op", "QEMU timer IPIs/op"]
                          + (["CH ops/s", "CH/QEMU", "CH exits/op", "CH timer IPIs/op"] if with_ch else []), rows))
        L.append("")
    if "ratios.png" in plots:
        L.append("## All on/off ratios")
        L.append("")
        L.append(f"![ratios]({path_for('ratios.png')})")
        L.append("")
    L.append("## What the guests saw")
    L.append("")
    rows = []
    for key, g in sorted(res["guest_views"].items(), key=lambda kv: (SCENARIO_ORDER.index(kv[0].split("/")[0]), CONFIG_ORDER.index(kv[0].split("/")[1]))):
        gi = g.get("info") or {}
        rows.append([key, g.get("cpus"), g.get("features"), g.get("hints"), g.get("clocksource"),
                     gi.get("clockevent") or "–", gi.get("broadcast") or "–", gi.get("cpuidle") or "–", gi.get("apic") or "–",
                     gi.get("tsc_deadline") or "–", "<br>".join(g.get("kvm_guest_lines") or []) or "none"])
    L.append(md_table(["scenario/config", "vCPUs", "KVM features", "hints", "clocksource", "clock events", "broadcast",
                       "cpuidle", "APIC routing", "CPUs with TSC deadline", "kvm-guest lines"], rows))
    L.append("")
    L.append(f"Raw data: `results.json` beside this report (every run of every cell, every counter per operation).")
    L.append("")
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(L))


def print_summary(res, targets, ratios):
    print()
    print(f"PV features benchmark: {res['settings']['runs']} round(s), {res['settings']['seconds']} s per workload, "
          f"{'EMULATED (KVM lab): ratios and counts only' if res['emulated'] else 'direct (hardware KVM)'}")
    for r in ratios:
        print(f"  {r['scenario']:<12} {r['kind']:<10} {r['vmm']:<16} {r['ratio']:<20} throughput {fmt(r['throughput']):>7}  "
              f"time/op {fmt(r['time_per_op']):>7}  exits/op {fmt(r['exits_per_op']):>6}")
    print("Targets:")
    for t in targets:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        ch = f", Cloud Hypervisor {fmt(t.get('ch'))}" if res.get("ch") else ""
        print(f"  {verdict:<12} {t['id']:<21} {t['scenario']:<12} pv-vmm {fmt(t['pv_vmm'])} (QEMU {fmt(t['qemu'])}{ch}), "
              f"threshold {t['threshold']}")
    if res["failures"]:
        print(f"FAILED boots: {len(res['failures'])}")
        for f in res["failures"]:
            print(f"  round {f['round']} {f['scenario']} {f['config']}: {f.get('reason', f['result'])}")
    if res["retries"]:
        print(f"RETRIED boots (failed, the boot or round ran again): {len(res['retries'])}")
        for r in res["retries"]:
            print(f"  round {r['round']} {r['scenario']} {r['config']}: {r.get('reason')}")
    if res["lab_status"] not in (0,):
        print(f"lab run status: {res['lab_status']}{' (lab failure)' if res['lab_status'] == 125 else ''}")


def run_started(work):
    """The run's start from its work directory's name (workloads-YYYYmmdd-HHMMSS, local time)."""
    m = re.search(r"workloads-(\d{4})(\d\d)(\d\d)-(\d\d)(\d\d)\d\d$", os.path.abspath(work).rstrip("/"))
    return f"{m.group(1)}-{m.group(2)}-{m.group(3)} {m.group(4)}:{m.group(5)}" if m else "unknown"


def round_floats(x, digits=5):
    """Floats rounded to DIGITS significant digits, so that results.json stays readable."""
    if isinstance(x, float):
        return float(f"{x:.{digits}g}")
    if isinstance(x, dict):
        return {k: round_floats(v, digits) for k, v in x.items()}
    if isinstance(x, list):
        return [round_floats(v, digits) for v in x]
    return x


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--raw", required=True, help="the lab run's stdout")
    ap.add_argument("--work", required=True, help="the benchmark's work directory (boots/ goes there)")
    ap.add_argument("--out", required=True, help="where report.md, results.json and the plots go")
    ap.add_argument("--lab-status", type=int, default=0)
    ap.add_argument("--command", default="scripts/bench")
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--seconds", type=int, required=True)
    ap.add_argument("--outer-host", default="")
    ap.add_argument("--git", default="unknown")
    ap.add_argument("--git-dirty", default="0")
    ap.add_argument("--kernel", default="")
    ap.add_argument("--initramfs", default="")
    ap.add_argument("--pv-vmm-sha256", default="")
    ap.add_argument("--ch-profile", default=None, help="the run booted the patched Cloud Hypervisor, built in this profile")
    ap.add_argument("--repo-paths", action="store_true", help="the report lives in the repository: relative links")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args()

    boots_dir = os.path.join(args.work, "boots")
    os.makedirs(boots_dir, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    if not os.path.isfile(args.raw):
        die(f"no raw output at {args.raw}")
    info, boot_lines, blobs, retries = parse_raw(args.raw, boots_dir)
    boots = [load_boot(os.path.join(boots_dir, name)) for name in blobs]
    scenarios = {}
    for b in boots:
        if b["scenario"]:
            meta = read_meta(os.path.join(boots_dir, f"{b['round']}-{b['scenario']}-{b['config']}"))
            scenarios.setdefault(b["scenario"], [k for k in meta.get("kinds", "").split(",") if k])
    emulated = info.get("inside_lab") == "1"

    failures = [dict(round=int(b.get("round", 0)), scenario=b.get("scenario"), config=b.get("config"),
                     result=b.get("result"), reason=b.get("reason"))
                for b in boot_lines if b.get("result") != "ok"]
    announced = {(int(b.get("round", 0)), b.get("scenario"), b.get("config")) for b in boot_lines}
    for b in boots:
        if (b["round"], b["scenario"], b["config"]) not in announced:
            failures.append(dict(round=b["round"], scenario=b["scenario"], config=b["config"], result="no @@BOOT line"))
    for b in boot_lines:
        name = f"{b.get('round')}-{b.get('scenario')}-{b.get('config')}"
        if name not in blobs:
            failures.append(dict(round=int(b.get("round", 0)), scenario=b.get("scenario"), config=b.get("config"),
                                 result="fail", reason="its files did not come back (blob missing or corrupt)"))

    cells = build_cells(boots)
    ratios = build_ratios(cells, scenarios)
    vendor = info.get("kvm_module", "")
    targets = build_targets(cells, ratios, scenarios, emulated, vendor)

    commands, guest_views, shape = {}, {}, {}
    for b in sorted(boots, key=lambda b: b["round"]):
        key = f"{b['scenario']}/{b['config']}"
        if key not in commands and b["commands"]:
            commands[key] = b["commands"][0]
        if key not in guest_views and b["guests"]:
            guest_views[key] = b["guests"][0]
        if b["config"] != "bare" and b["scenario"] not in shape:
            shape[b["scenario"]] = (f"{b['vms']} VM(s) with {b['vcpus']} vCPUs each on {b['host_cpus']} host CPUs"
                                    + (", one busy loop on the host during the workloads" if b["scenario"] == "oversub" else ""))
    xc = []
    sources = set()
    for b in boots:
        for run in b["runs"].values():
            c = run["counters"]
            if run.get("vcpu_sum_exits") and c.get("exits"):
                xc.append(run["vcpu_sum_exits"] / c["exits"])
        if b["vcpu_source"]:
            sources.add(b["vcpu_source"])
    cross = None
    if xc:
        cross = {"n": len(xc), "min": min(xc), "max": max(xc), "median": statistics.median(xc),
                 "source_note": " and ".join(sorted(sources))}

    res = {
        "benchmark": "pv-workloads",
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "run_started": run_started(args.work),
        "command": args.command,
        "where": "lab" if emulated else "direct",
        "emulated": emulated,
        "lab_status": args.lab_status,
        "outer_host": args.outer_host,
        "host": info,
        "pv_vmm": {"git": args.git, "dirty": args.git_dirty not in ("", "0"), "sha256": args.pv_vmm_sha256},
        "ch": {"profile": args.ch_profile} if args.ch_profile else None,
        "guest": {"kernel": args.kernel, "initramfs": args.initramfs, "memory_mib": 512,
                  "cmdline": "console=ttyS0 quiet panic=-1 pv.bench=<workloads> pv.secs=<seconds>"},
        "settings": {"runs": args.runs, "seconds": args.seconds, "scenarios": scenarios},
        "scenario_shape": shape,
        "commands": commands,
        "counter_sources": {
            "per_vm": "L1 debugfs /sys/kernel/debug/kvm/<pid>-<fd>/<stat>, every VMM",
            "per_vcpu": sorted(sources),
            "trace_events": "tracefs histogram triggers keyed by thread: " + (info.get("trace_hists") or "none available"),
        },
        "cross_check": cross,
        "guest_views": guest_views,
        "failures": failures,
        "retries": [dict(round=r["round"], scenario=r.get("scenario"), config=r.get("config"), reason=r.get("reason"))
                    for r in retries],
        "targets": targets,
        "ratios": ratios,
        "cells": [
            {"scenario": s, "kind": k, "config": c, "vmm": CONFIGS.get(c, ("?", "?"))[0], "setting": CONFIGS.get(c, ("?", "?"))[1],
             "summary": cell["summary"],
             # Per run the scalars; the breakdowns (by exit reason, vector, ...) only as medians above.
             "runs": [{k: v for k, v in r.items() if k not in RUN_BREAKDOWN_FIELDS} for r in cell["runs"]]}
            for (s, k, c), cell in sorted(cells.items(), key=lambda kv: (SCENARIO_ORDER.index(kv[0][0]) if kv[0][0] in SCENARIO_ORDER else 99,
                                                                        KIND_ORDER.index(kv[0][1]) if kv[0][1] in KIND_ORDER else 99,
                                                                        CONFIG_ORDER.index(kv[0][2]) if kv[0][2] in CONFIG_ORDER else 99))
        ],
    }
    plots = [] if args.no_plots else plot_all(cells, ratios, scenarios, args.out, emulated)
    res["plots"] = plots
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(round_floats(res), f, indent=1)
        f.write("\n")
    write_report(res, cells, ratios, targets, plots, args.out, lambda name: name)
    print_summary(res, targets, ratios)
    print(f"\nreport: {os.path.join(args.out, 'report.md')}")
    ok = not failures and args.lab_status == 0 and boots
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
