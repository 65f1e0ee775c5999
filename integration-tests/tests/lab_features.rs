//! Feature by feature, in a real Linux guest under pv-vmm (in the KVM lab, or directly on a
//! bare-metal runner): the guest's view (its CPUID dump, its kernel's lines, its
//! /proc/stat, its workloads' results) against pv-vmm's `vm.info` and the host KVM's
//! counters (`vm.counters`, and tracefs where the host has it). One L1 boot runs every case
//! through `integration-tests/lab-cases/feature-cases.sh`.
//!
//! Cases (issue 8): the guest view of the defaults, of `kvm_pv=off` and of each feature
//! alone; `dedicated=on` and `disable_exits=[hlt]` with an idle window; PV send-IPI under
//! the multicast-IPI load, on and off; steal time under overcommit with a host CPU hog, on
//! and off; PV TLB flush under the same overcommit with the TLB-shootdown load, on and off;
//! invalid configurations refused before any guest starts. Pending changes across a reboot
//! are `lab_api.rs`'s; hostile guests are `lab_hostile.rs`'s.
//!
//! Figures printed here are from an emulated L1 in the lab: compare them within one run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use integration_tests::peer::{
    effective_state, expected_pv_lines, json_names as names, parse_cases, CaseResult,
};
use integration_tests::{
    ok, repo_root, report_case_retries, vmm_binaries, GuestAssets, LabCommand,
};
use pv_features::cpuid::{KvmFeatures, KvmHints, Rule};
use serde_json::Value;

/// One case of the script: `NAME CPUS HOG WORK` (see feature-cases.sh).
struct Case {
    name: String,
    cpus: String,
    hog: &'static str,
    work: &'static str,
}

fn case(name: &str, cpus: &str, hog: &'static str, work: &'static str) -> Case {
    Case {
        name: name.to_owned(),
        cpus: cpus.to_owned(),
        hog,
        work,
    }
}

/// The features pv-vmm can offer at all (what `all` asks for, minus what it does not back).
fn offerable() -> KvmFeatures {
    KvmFeatures::all() - KvmFeatures::VMM_PROVIDED
}

/// `kvm_pv=[...]` for exactly these features.
fn kvm_pv_list(features: KvmFeatures) -> String {
    format!("kvm_pv=[{}]", features.names().join(","))
}

/// The configurations whose guest view is compared with vm.info: defaults, off, and each
/// feature alone (with what the guest needs beside it: `Rule::with_needs`).
fn view_cases() -> Vec<Case> {
    let mut cases = vec![
        case("default", "boot=2", "0", "-"),
        case("off", "boot=2,kvm_pv=off", "0", "-"),
    ];
    for &(flag, name) in KvmFeatures::NAMES {
        if !offerable().contains(flag) {
            continue;
        }
        let set = Rule::with_needs(flag);
        cases.push(case(
            &format!("only_{name}"),
            &format!("boot=2,{}", kvm_pv_list(set)),
            "0",
            "-",
        ));
    }
    cases
}

/// Configurations pv-vmm must refuse, and a word its message must hold: among them each
/// feature the guest cannot use without another (pv_features::cpuid::Rule), which boots
/// in view_cases with what it needs.
const REFUSED: [(&str, &str, &str); 10] = [
    (
        "bad_tlb",
        "boot=2,kvm_pv=[pv_tlb_flush]",
        "needs steal_time",
    ),
    (
        "bad_sched_yield",
        "boot=2,kvm_pv=[pv_sched_yield]",
        "pv_sched_yield needs steal_time",
    ),
    (
        "bad_async_pf_int",
        "boot=2,kvm_pv=[async_pf_int]",
        "async_pf_int needs async_pf",
    ),
    (
        "bad_async_pf",
        "boot=2,kvm_pv=[async_pf]",
        "async_pf needs async_pf_int",
    ),
    (
        "bad_clock_stable",
        "boot=2,kvm_pv=[clocksource_stable]",
        "clocksource_stable needs clocksource or clocksource2",
    ),
    (
        "bad_unhalt",
        "boot=2,kvm_pv=[pv_unhalt],disable_exits=[hlt]",
        "pv_unhalt",
    ),
    ("bad_name", "boot=2,kvm_pv=[pv_tlb_flushh]", "pv_tlb_flushh"),
    ("bad_exit", "boot=2,disable_exits=[hlt,nosuch]", "nosuch"),
    ("bad_poll", "boot=2,halt_poll_ns=-5", "-5"),
    ("bad_boot", "boot=0", "boot"),
];

fn measured_cases() -> Vec<Case> {
    let all = offerable();
    vec![
        case("idle_default", "boot=HOSTCPUS", "0", "idle:3,vmcall:1"),
        case(
            "idle_dedicated",
            "boot=HOSTCPUS,dedicated=on",
            "0",
            "idle:3",
        ),
        case(
            "idle_nohlt",
            "boot=HOSTCPUS,disable_exits=[hlt]",
            "0",
            "idle:3",
        ),
        case("ipi_on", "boot=OVER", "0", "ipi-mask:3"),
        case(
            "ipi_off",
            &format!(
                "boot=OVER,{}",
                kvm_pv_list(Rule::without(all, KvmFeatures::PV_SEND_IPI))
            ),
            "0",
            "ipi-mask:3",
        ),
        case("tlb_on", "boot=OVER", "host", "tlb:4,ebizzy:3"),
        case(
            "tlb_off",
            &format!(
                "boot=OVER,{}",
                kvm_pv_list(Rule::without(all, KvmFeatures::PV_TLB_FLUSH))
            ),
            "host",
            "tlb:4",
        ),
        case(
            "steal_off",
            &format!(
                "boot=OVER,{}",
                kvm_pv_list(Rule::without(all, KvmFeatures::STEAL_TIME))
            ),
            "host",
            "ebizzy:3",
        ),
    ]
}

/// A JSON record of a case (vm.info, vm.counters), or a failure naming it.
fn json(c: &CaseResult, kind: &str, label: &str) -> Value {
    let text = c
        .record(kind, label)
        .unwrap_or_else(|| panic!("case {}: no {kind} {label} record\n{}", c.name, c.dump()));
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("case {}: {kind} {label} is not JSON ({e}): {text}", c.name))
}

/// What vm.info says the VM runs with: KVM leaves present, features, hints.
fn effective(info: &Value) -> (bool, KvmFeatures, KvmHints) {
    effective_state(&info["pv"]["effective"])
}

/// One workload's figures: its own result line, and the growth of the counters around it.
struct Work {
    ops: u64,
    per_s: f64,
    before: Value,
    after: Value,
    /// The guest's aggregate steal time (USER_HZ ticks) during the workload.
    guest_steal: u64,
    /// Flushes the guest requested through the steal-time record (tracefs), if counted.
    flush_requested: Option<u64>,
    /// Hypercalls by number (tracefs), if counted without losing events.
    hypercall_nrs: Option<BTreeMap<u64, u64>>,
    /// SEND_IPI hypercalls by ICR (delivery mode and vector), likewise.
    send_ipi_icr: Option<BTreeMap<u64, u64>>,
    /// x2APIC ICR writes (one exit each) by vector, likewise.
    icr_writes: Option<BTreeMap<u64, u64>>,
}

impl Work {
    fn of(c: &CaseResult, kind: &str) -> Work {
        let line = c
            .guest_marker(&format!("WORK kind={kind} "))
            .unwrap_or_else(|| {
                panic!("case {}: no result of pv-load {kind}\n{}", c.name, c.dump())
            });
        let field = |key: &str| {
            line.split(' ')
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_default()
                .to_owned()
        };
        let gstat = |when: &str| -> u64 {
            let text = c
                .guest_markers(&format!("GSTAT {kind} {when} "))
                .first()
                .map(|s| s.to_string())
                .unwrap_or_else(|| panic!("case {}: no /proc/stat {when} {kind}", c.name));
            // "cpu  user nice system idle iowait irq softirq steal guest guest_nice"
            text.split_whitespace()
                .nth(8)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("case {}: bad /proc/stat line `{text}`", c.name))
        };
        Work {
            ops: field("ops=").parse().unwrap_or(0),
            per_s: field("per_s=").parse().unwrap_or(0.0),
            before: json(c, "counters", &format!("{kind}-before")),
            after: json(c, "counters", &format!("{kind}-after")),
            guest_steal: gstat("after").saturating_sub(gstat("before")),
            flush_requested: c
                .record("pv_tlb_flush_requested", kind)
                .and_then(|v| v.trim().parse().ok()),
            hypercall_nrs: c.record("hypercall_nrs", kind).and_then(parse_nrs),
            send_ipi_icr: c.record("send_ipi_icr", kind).and_then(parse_nrs),
            icr_writes: c.record("icr_writes", kind).and_then(parse_nrs),
        }
    }

    /// Hypercalls of this number during the workload (tracefs), if counted.
    fn hypercalls(&self, nr: u64) -> Option<u64> {
        self.hypercall_nrs
            .as_ref()
            .map(|m| m.get(&nr).copied().unwrap_or(0))
    }

    /// Growth of a KVM statistic summed over the vCPUs.
    fn delta(&self, stat: &str) -> u64 {
        vcpu_sum(&self.after, stat).saturating_sub(vcpu_sum(&self.before, stat))
    }

    /// Growth of each vCPU's steal time (ns) in its steal-time record; None where the
    /// record was not readable.
    fn steal_ns(&self) -> Vec<Option<u64>> {
        let of = |v: &Value| -> Vec<Option<u64>> {
            v["vcpus"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|c| c["steal_time"]["record"]["steal_ns"].as_u64())
                        .collect()
                })
                .unwrap_or_default()
        };
        of(&self.before)
            .into_iter()
            .zip(of(&self.after))
            .map(|(b, a)| Some(a?.saturating_sub(b?)))
            .collect()
    }

    fn per_op(&self, stat: &str) -> f64 {
        self.delta(stat) as f64 / self.ops.max(1) as f64
    }
}

/// `0xa:914 0xb:257 overrun:0` into {10: 914, 11: 257}; None if the trace lost events.
fn parse_nrs(text: &str) -> Option<BTreeMap<u64, u64>> {
    let mut map = BTreeMap::new();
    for word in text.split_whitespace() {
        let (key, count) = word.split_once(':')?;
        let count: u64 = count.parse().ok()?;
        if key == "overrun" {
            if count > 0 {
                return None;
            }
            continue;
        }
        map.insert(
            u64::from_str_radix(key.trim_start_matches("0x"), 16).ok()?,
            count,
        );
    }
    Some(map)
}

/// KVM's hypercall numbers (include/uapi/linux/kvm_para.h).
const KVM_HC_KICK_CPU: u64 = 5;
const KVM_HC_SEND_IPI: u64 = 10;
const KVM_HC_SCHED_YIELD: u64 = 11;
/// The ICR of a fixed-delivery IPI on Linux's CALL_FUNCTION_VECTOR (smp_call_function_many:
/// what an expedited membarrier sends).
const ICR_CALL_FUNCTION: u64 = 0xfc;
/// The ICR of a fixed-delivery IPI on Linux's LOCAL_TIMER_VECTOR: a tick-broadcast IPI,
/// which a guest with a TSC-deadline local APIC timer never sends.
const ICR_LOCAL_TIMER: u64 = 0xec;

fn vcpu_sum(counters: &Value, name: &str) -> u64 {
    counters["vcpus"]
        .as_array()
        .map(|v| v.iter().filter_map(|c| c["stats"][name].as_u64()).sum())
        .unwrap_or(0)
}

/// What the groups' lab runs printed, one after the other.
struct Joined {
    stdout: String,
    stderr: String,
    mode: Option<integration_tests::LabMode>,
}

#[test]
fn lab_features_guest_view_and_host_counters() {
    let assets = ok(GuestAssets::prepare());
    let (vmm, remote) = vmm_binaries();
    let dir = repo_root().join("integration-tests/lab-cases");
    let script = dir.join("feature-cases.sh");
    let views = view_cases();
    let measured = measured_cases();
    // The cases, in groups of one L1 run each: a crashed L1 (the lab loses one every few
    // minutes on a bad day: 42 per hour of load on 2026-12-03, see scripts/lab/README.md)
    // then costs one group's run, not all of them. A measured pair (on/off) shares a run.
    let words = |c: &Case| {
        [
            c.name.clone(),
            c.cpus.clone(),
            c.hog.to_owned(),
            c.work.to_owned(),
        ]
    };
    let mut groups: Vec<Vec<[String; 4]>> = views
        .chunks(8)
        .map(|g| g.iter().map(words).collect())
        .collect();
    groups.push(
        REFUSED
            .iter()
            .map(|(name, cpus, _)| {
                [
                    (*name).to_owned(),
                    (*cpus).to_owned(),
                    "0".to_owned(),
                    "refuse".to_owned(),
                ]
            })
            .collect(),
    );
    for names in [
        &["idle_default", "idle_dedicated", "idle_nohlt"][..],
        &["ipi_on", "ipi_off"],
        &["tlb_on", "tlb_off", "steal_off"],
    ] {
        groups.push(
            measured
                .iter()
                .filter(|c| names.contains(&c.name.as_str()))
                .map(words)
                .collect(),
        );
    }
    assert_eq!(
        groups.iter().map(Vec::len).sum::<usize>(),
        views.len() + REFUSED.len() + measured.len(),
        "every case is in a group"
    );
    let mut stdout = String::new();
    let mut stderr = String::new();
    let mut mode = None;
    for group in &groups {
        let mut args: Vec<String> = vec![
            "sh".into(),
            script.display().to_string(),
            vmm.display().to_string(),
            remote.display().to_string(),
            assets.kernel.display().to_string(),
            assets.initramfs.display().to_string(),
            "150".into(),
        ];
        for case in group {
            args.extend(case.iter().cloned());
        }
        let out = ok(LabCommand::new(args)
            .file(&vmm)
            .file(&remote)
            .file(&assets.kernel)
            .file(&assets.initramfs)
            .file(&script)
            .file(dir.join("common.sh"))
            // A group took up to 5 minutes in the lab on 2026-12-03; room for stalled
            // cases that run again.
            .timeout(Duration::from_secs(900))
            .retries(4)
            .run());
        if let Some(t) = &out.timing {
            println!(
                "lab: {} cases, L1 boot {:.1} s, whole run {:.1} s",
                group.len(),
                t.l1_boot_s.unwrap_or(f64::NAN),
                t.total_s
            );
        }
        mode.get_or_insert(out.mode);
        stdout.push_str(&out.stdout);
        stderr.push_str(&out.stderr);
    }
    let out = Joined {
        stdout,
        stderr,
        mode,
    };
    let host = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("@@HOST ")?.strip_suffix("@@"))
        .unwrap_or_else(|| panic!("no @@HOST line\n{}\n{}", out.stdout, out.stderr))
        .to_owned();
    println!("host: {host} (mode {:?})", out.mode);
    let results = parse_cases(&out.stdout);
    integration_tests::peer::assert_guest_logs_clean(&results);
    // Cases run again after the lab lost their guest (a triple fault, a stall): loud.
    report_case_retries(&out.stdout);
    let find = |name: &str| -> &CaseResult {
        results
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("case {name} missing\n{}\n{}", out.stdout, out.stderr))
    };
    let mut table = String::new();
    let mut failures = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };

    // Every booted case came up, answered, ran its workloads and powered off: status 0.
    for c in views.iter().chain(&measured) {
        let r = find(&c.name);
        check(
            r.end == Some(Ok(())) && r.stats.get("vmm_exit") == Some(&0),
            format!("did not boot and power off cleanly: {}", r.dump()),
        );
    }

    // 1. The guest's CPUID is vm.info's effective set bit for bit; its lines match it.
    for c in &views {
        let r = find(&c.name);
        let info = json(r, "info", "-");
        let (leaves, features, hints) = effective(&info);
        let guest = r
            .guest_kvm_cpuid()
            .unwrap_or_else(|e| panic!("{e}\n{}", r.dump()));
        match guest {
            None => check(
                !leaves,
                format!("{}: vm.info has KVM leaves, the guest found none", c.name),
            ),
            Some((base, gf, gh)) => {
                check(
                    leaves && base == 0x4000_0000 && gf == features && gh == hints,
                    format!(
                        "{}: guest CPUID base {base:#x} features {:#x} hints {:#x}, vm.info \
                         features {:#x} hints {:#x} leaves {leaves}",
                        c.name,
                        gf.bits(),
                        gh.bits(),
                        features.bits(),
                        hints.bits()
                    ),
                );
            }
        }
        let want = expected_pv_lines(leaves, features, hints, 2);
        let got = r.pv_guest_lines();
        check(
            want == got,
            format!("{}: guest lines {got:?}, expected {want:?}", c.name),
        );
        let _ = writeln!(
            table,
            "{:<22} guest CPUID {:<10} lines {}",
            c.name,
            guest.map_or("none".to_owned(), |(_, f, _)| format!("{:#x}", f.bits())),
            got.len()
        );
    }

    // 8. Invalid configurations: status 1 and one message naming the value, no guest.
    for (name, cpus, word) in REFUSED {
        let r = find(name);
        let last = r.vmm_log.last().map(String::as_str).unwrap_or_default();
        check(
            r.stats.get("vmm_exit") == Some(&1)
                && last.starts_with("pv-vmm: error: ")
                && last.contains(word)
                && r.guest_log.is_empty(),
            format!(
                "{name} (--cpus {cpus}): expected a refusal naming `{word}`\n{}",
                r.dump()
            ),
        );
        let _ = writeln!(table, "{name:<22} refused: {last}");
    }

    // 2. dedicated=on and disable_exits=[hlt]: realtime hint only with dedicated, no
    // pv_unhalt, no HLT exits while idle; exits the host refuses are reported.
    let idle = |name: &str| Work::of(find(name), "idle");
    let (d, ded, nohlt) = (
        idle("idle_default"),
        idle("idle_dedicated"),
        idle("idle_nohlt"),
    );
    let ded_case = find("idle_dedicated");
    let ded_info = json(ded_case, "info", "-");
    let allowed: Vec<String> = names(&ded_info["host"]["allowed_exits"], |n| Some(n.to_owned()));
    let disabled: Vec<String> = names(&ded_info["pv"]["effective"]["disable_exits"], |n| {
        Some(n.to_owned())
    });
    let refused: Vec<&str> = ["mwait", "hlt", "pause", "cstate"]
        .into_iter()
        .filter(|e| !allowed.iter().any(|a| a == e))
        .collect();
    check(
        disabled == allowed,
        format!("dedicated disables {disabled:?}, the host allows {allowed:?}"),
    );
    let notes = ded_info["pv"]["effective"]["notes"].to_string();
    if refused.is_empty() {
        println!("dedicated: this host allows disabling every exit; none refused");
    } else {
        check(
            refused.iter().all(|e| notes.contains(e)),
            format!("dedicated: refused exits {refused:?} not reported in vm.info notes {notes}"),
        );
        println!("dedicated: the host refuses {refused:?}, reported: {notes}");
    }
    for (name, case, hlt_off) in [
        (
            "idle_dedicated",
            ded_case,
            allowed.iter().any(|a| a == "hlt"),
        ),
        ("idle_nohlt", find("idle_nohlt"), true),
    ] {
        let (_, f, h) = case
            .guest_kvm_cpuid()
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("{name}: no KVM leaves\n{}", case.dump()));
        let want_rt = name == "idle_dedicated";
        check(
            f.contains(KvmFeatures::PV_UNHALT) != hlt_off
                && h.contains(KvmHints::REALTIME) == want_rt,
            format!(
                "{name}: guest features {:#x} hints {:#x}",
                f.bits(),
                h.bits()
            ),
        );
    }
    check(
        d.delta("halt_exits") > 0,
        format!(
            "idle default guest: halt_exits grew {}",
            d.delta("halt_exits")
        ),
    );
    if allowed.iter().any(|a| a == "hlt") {
        check(
            ded.delta("halt_exits") == 0 && nohlt.delta("halt_exits") == 0,
            format!(
                "HLT exits disabled, yet idle halt_exits grew: dedicated {}, disable_exits=[hlt] {}",
                ded.delta("halt_exits"),
                nohlt.delta("halt_exits")
            ),
        );
    }
    for (name, w) in [
        ("idle_default", &d),
        ("idle_dedicated", &ded),
        ("idle_nohlt", &nohlt),
    ] {
        let _ = writeln!(
            table,
            "{name:<22} idle 3 s: halt_exits +{}, exits +{}",
            w.delta("halt_exits"),
            w.delta("exits")
        );
    }

    // 7 (the Linux part). User space issuing VMCALL/VMMCALL: KVM answers -KVM_EPERM (-1)
    // to CPL 3 and counts the attempt; nothing reaches pv-vmm's vCPU loop.
    let vmcall_case = find("idle_default");
    let vmcall = Work::of(vmcall_case, "vmcall");
    let line = vmcall_case
        .guest_marker("WORK kind=vmcall ")
        .unwrap_or_default()
        .to_owned();
    let vmm_hypercalls = |v: &Value| v["vmm_exits"]["hypercall"].as_u64();
    let reached = vmm_hypercalls(&vmcall.after)
        .zip(vmm_hypercalls(&vmcall.before))
        .map(|(a, b)| a.saturating_sub(b));
    check(
        line.contains(" rax=-1") && reached == Some(0) && vmcall.delta("hypercalls") >= 1,
        format!(
            "user-space VMCALL: `{line}`, hypercall exits that reached pv-vmm {reached:?}, KVM \
             hypercalls +{}",
            vmcall.delta("hypercalls")
        ),
    );
    let _ = writeln!(
        table,
        "{:<22} user-space {}: KVM hypercalls +{}, reached pv-vmm {reached:?}",
        "vmcall",
        line.split(' ')
            .filter(|w| w.starts_with("insn=") || w.starts_with("rax="))
            .collect::<Vec<_>>()
            .join(" "),
        vmcall.delta("hypercalls")
    );

    // 3. PV send-IPI: with it every CALL_FUNCTION multicast to a subset goes out as one
    // SEND_IPI hypercall and none as per-destination x2APIC ICR writes; without it, the
    // reverse.
    // Not every membarrier call becomes a two-target multicast: membarrier interrupts only
    // the CPUs currently running the process, and smp_call_function_many() interrupts only
    // the targets whose call queue was empty (a target vCPU preempted in L1 may still hold
    // an earlier CALL_FUNCTION_SINGLE, e.g. a remote wake-up); a one-target call goes out as
    // CALL_FUNCTION_SINGLE by ICR write, with or without the feature. Under the lab's
    // overcommit that was 0-23% of the calls (296 SEND_IPIs for 384 calls in the worst run
    // seen), so usage is checked as "most calls" and bypass as "none". tracefs counts
    // SEND_IPI hypercalls by ICR and ICR writes by vector; without it, hypercalls minus PV
    // sched yields (directed_yield_attempted) stand in, as a lower bound only (it includes
    // every other PV IPI and KICK_CPU).
    let ipi = |name: &str| Work::of(find(name), "ipi-mask");
    let (on, off) = (ipi("ipi_on"), ipi("ipi_off"));
    let by_hypercall = |w: &Work| match &w.send_ipi_icr {
        Some(icr) => icr.get(&ICR_CALL_FUNCTION).copied().unwrap_or(0),
        None => w
            .delta("hypercalls")
            .saturating_sub(w.delta("directed_yield_attempted")),
    };
    let by_icr_write = |w: &Work| {
        w.icr_writes
            .as_ref()
            .map(|v| v.get(&ICR_CALL_FUNCTION).copied().unwrap_or(0))
    };
    for (name, w) in [("ipi_on", &on), ("ipi_off", &off)] {
        let _ = writeln!(
            table,
            "{name:<22} membarrier x{} ({:.0}/s): CALL_FUNCTION SEND_IPI/call {:.2}, by ICR \
             write/call {:.2}, exits/call {:.2}, hypercalls by nr {:?}, SEND_IPI by ICR {:?}",
            w.ops,
            w.per_s,
            by_hypercall(w) as f64 / w.ops.max(1) as f64,
            by_icr_write(w).unwrap_or(0) as f64 / w.ops.max(1) as f64,
            w.per_op("exits"),
            w.hypercall_nrs,
            w.send_ipi_icr
        );
    }
    let traced = on.send_ipi_icr.is_some()
        && off.send_ipi_icr.is_some()
        && on.icr_writes.is_some()
        && off.icr_writes.is_some();
    if !traced {
        println!("NOT EXERCISED: SEND_IPI by ICR and ICR writes by vector (no tracefs, or the trace lost events): lower bound only");
    }
    check(
        on.ops > 0 && off.ops > 0,
        format!("membarrier calls: on {}, off {}", on.ops, off.ops),
    );
    check(
        by_hypercall(&on) * 2 >= on.ops
            && (!traced || by_hypercall(&on) as f64 <= 1.5 * on.ops as f64 + 50.0),
        format!(
            "PV send-IPI on: {} CALL_FUNCTION SEND_IPI hypercalls for {} membarrier calls \
             (want at least half, at most 1.5x + 50)",
            by_hypercall(&on),
            on.ops
        ),
    );
    if traced {
        // With the feature only an all-but-self multicast still goes by ICR write, as one
        // shorthand write (Linux keeps the APIC's send_IPI_allbutself): the guest's own
        // all-CPU calls, a handful in the window (1 in a CI run), never per destination.
        check(
            by_icr_write(&on).is_some_and(|n| n as f64 <= 0.1 * on.ops as f64 + 5.0),
            format!(
                "PV send-IPI on: {:?} CALL_FUNCTION IPIs by x2APIC ICR write for {} membarrier \
                 calls (want about 0, at most 0.1 per call + 5: multicasts go by hypercall)",
                by_icr_write(&on),
                on.ops
            ),
        );
        check(
            by_icr_write(&off).unwrap_or(0) >= off.ops,
            format!(
                "PV send-IPI off: {:?} CALL_FUNCTION IPIs by x2APIC ICR write for {} \
                 membarrier calls (want at least one per call: two targets each, most calls)",
                by_icr_write(&off),
                off.ops
            ),
        );
    }
    check(
        off.hypercalls(KVM_HC_SEND_IPI).unwrap_or(0) == 0
            && by_hypercall(&off) as f64 <= 0.1 * off.ops as f64 + 50.0,
        format!(
            "PV send-IPI off: {:?} SEND_IPI hypercalls for {} membarrier calls",
            off.hypercalls(KVM_HC_SEND_IPI),
            off.ops
        ),
    );
    // The exits that sending the multicasts cost, per membarrier call: a SEND_IPI
    // hypercall each with the feature; one x2APIC ICR write per destination without it.
    // (The VM's whole exit count per call is dominated by the overcommitted vCPUs' other
    // exits, so it is printed, not asserted.)
    let send_exits = |w: &Work| -> Option<f64> {
        let hc = w.send_ipi_icr.as_ref()?.get(&ICR_CALL_FUNCTION).copied();
        Some((hc.unwrap_or(0) + by_icr_write(w)?) as f64 / w.ops.max(1) as f64)
    };
    match (send_exits(&on), send_exits(&off)) {
        (Some(e_on), Some(e_off)) => {
            let _ = writeln!(
                table,
                "{:<22} exits to send one multicast: PV send-IPI on {e_on:.2}, off {e_off:.2}",
                "ipi"
            );
            check(
                e_on <= 1.2 && e_off > e_on,
                format!("exits per multicast send: on {e_on:.2} (want <= 1.2), off {e_off:.2}"),
            );
        }
        _ => println!(
            "NOT EXERCISED: exits per multicast send (no tracefs kvm_msr/kvm_hypercall, or lost events)"
        ),
    }
    // No timer-broadcast IPIs in any traced workload of a guest on TSC-deadline timers:
    // it has no broadcast device. (Before pv-vmm advertised the TSC-deadline timer the PIT
    // was one and the idle 4-vCPU guest alone sent ~1,000 of these in 3 s.) In the lab the
    // guests boot with lapic=notscdeadline (TSC-deadline guests made L1 panic,
    // scripts/lab/README.md), so there this is checked nowhere and said so.
    let mut timer_checked = 0;
    let mut timer_skipped = Vec::new();
    for c in &results {
        if c.guest_marker("GUEST-TIMER ") != Some("lapic-deadline broadcast=<NULL>") {
            if c.records.iter().any(|r| r.kind == "send_ipi_icr") {
                timer_skipped.push(c.name.as_str());
            }
            continue;
        }
        for r in &c.records {
            if r.kind != "send_ipi_icr" && r.kind != "icr_writes" {
                continue;
            }
            match parse_nrs(&r.payload) {
                Some(by_icr) => {
                    timer_checked += 1;
                    let n = by_icr.get(&ICR_LOCAL_TIMER).copied().unwrap_or(0);
                    check(
                        n == 0,
                        format!(
                            "{} ({}): {n} timer-broadcast IPIs by {} (want 0)",
                            c.name, r.label, r.kind
                        ),
                    );
                }
                None => println!(
                    "NOT EXERCISED: {} ({}): timer-broadcast IPIs by {} (lost trace events)",
                    c.name, r.label, r.kind
                ),
            }
        }
    }
    let _ = writeln!(
        table,
        "{:<22} timer-broadcast IPIs (vector 0xec): 0 expected in {timer_checked} traced windows",
        "timer"
    );
    if !timer_skipped.is_empty() {
        println!(
            "NOT EXERCISED: timer-broadcast IPIs of {} (their guests do not tick with lapic-deadline, e.g. lapic=notscdeadline in the lab)",
            timer_skipped.join(", ")
        );
    } else if timer_checked == 0 {
        println!("NOT EXERCISED: timer-broadcast IPIs (no tracefs)");
    }

    // 4. Steal time under overcommit with a host hog: the guest sees it, every vCPU's
    // record grows, KVM reports preemptions; with steal_time off the guest sees none.
    let tlb_on_case = find("tlb_on");
    let busy = Work::of(tlb_on_case, "ebizzy");
    let steal = busy.steal_ns();
    check(
        busy.guest_steal > 0,
        "guest /proc/stat steal did not grow under overcommit + hog".to_owned(),
    );
    check(
        !steal.is_empty() && steal.iter().all(|s| s.is_some_and(|n| n > 0)),
        format!("vm.counters steal time per vCPU: {steal:?}"),
    );
    check(
        busy.delta("preemption_reported") > 0,
        "preemption_reported did not grow".to_owned(),
    );
    let nosteal = Work::of(find("steal_off"), "ebizzy");
    let states: Vec<String> = nosteal.after["vcpus"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["steal_time"]["state"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default();
    check(
        nosteal.guest_steal == 0
            && !states.is_empty()
            && states.iter().all(|s| s == "not_advertised"),
        format!(
            "steal_time off: guest steal +{}, records {states:?}",
            nosteal.guest_steal
        ),
    );
    for (name, w) in [("tlb_on ebizzy", &busy), ("steal_off ebizzy", &nosteal)] {
        let _ = writeln!(
            table,
            "{name:<22} guest steal +{} ticks, vCPU steal ms {:?}, preemption_reported +{}",
            w.guest_steal,
            w.steal_ns()
                .iter()
                .map(|s| s.map(|n| n / 1_000_000))
                .collect::<Vec<_>>(),
            w.delta("preemption_reported")
        );
    }

    // 5. PV TLB flush under the same overcommit: flushes requested through the steal-time
    // record with it, none without.
    let tlb_on = Work::of(tlb_on_case, "tlb");
    let tlb_off = Work::of(find("tlb_off"), "tlb");
    for (name, w) in [("tlb_on", &tlb_on), ("tlb_off", &tlb_off)] {
        let _ = writeln!(
            table,
            "{name:<22} munmap x{} ({:.0}/s): flushes via steal-time record {}, tlb_flush/op \
             {:.2}, exits/op {:.2}, SEND_IPI {:?} KICK_CPU {:?} SCHED_YIELD {:?}",
            w.ops,
            w.per_s,
            w.flush_requested
                .map_or("not counted (no tracefs)".to_owned(), |n| n.to_string()),
            w.per_op("tlb_flush"),
            w.per_op("exits"),
            w.hypercalls(KVM_HC_SEND_IPI),
            w.hypercalls(KVM_HC_KICK_CPU),
            w.hypercalls(KVM_HC_SCHED_YIELD)
        );
    }
    check(
        tlb_on.ops > 0 && tlb_off.ops > 0,
        format!("unmaps: on {}, off {}", tlb_on.ops, tlb_off.ops),
    );
    if host.contains("tracefs=yes") {
        check(
            tlb_on.flush_requested.is_some_and(|n| n > 0),
            format!(
                "PV TLB flush on: {:?} flushes requested through the steal-time record",
                tlb_on.flush_requested
            ),
        );
        check(
            tlb_off.flush_requested == Some(0),
            format!(
                "PV TLB flush off: {:?} flushes requested through the steal-time record",
                tlb_off.flush_requested
            ),
        );
    } else {
        println!("NOT EXERCISED: this host has no tracefs kvm_pv_tlb_flush event; the PV TLB flush requests were not counted");
    }

    println!("\n{table}");
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_case_that_should_boot_asks_for_a_list_pv_vmm_takes() {
    for c in view_cases().iter().chain(measured_cases().iter()) {
        let Some(list) = c
            .cpus
            .split("kvm_pv=[")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
        else {
            continue;
        };
        let features = KvmFeatures::parse_list(list).expect("names");
        for rule in Rule::ALL {
            if let Some((feature, needs)) = rule.needs() {
                assert!(
                    !features.contains(feature) || features.intersects(needs),
                    "case {}: {rule:?} refuses [{list}]",
                    c.name
                );
            }
        }
    }
}

#[test]
fn hypercall_counts_parse() {
    let m = parse_nrs("0xa:914 0xb:257 overrun:0").expect("counts");
    assert_eq!(m.get(&KVM_HC_SEND_IPI), Some(&914));
    assert_eq!(m.get(&KVM_HC_SCHED_YIELD), Some(&257));
    assert_eq!(m.get(&KVM_HC_KICK_CPU), None);
    assert_eq!(parse_nrs("overrun:0"), Some(BTreeMap::new()));
    assert_eq!(parse_nrs("0xa:914 overrun:3"), None, "lost events");
    assert_eq!(parse_nrs("0xa:x overrun:0"), None);
    assert_eq!(parse_nrs("zz:1 overrun:0"), None);
}
