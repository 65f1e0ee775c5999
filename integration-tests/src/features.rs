//! The measured checks of the lab's feature suite (`feature-cases.sh`), shared by pv-vmm's
//! (`tests/lab_features.rs`) and the patched Cloud Hypervisor's (`tests/lab_ch.rs`): the
//! same workloads, the same figures and the same thresholds for both VMMs. The counters are
//! read in either VMM's `vm.counters` shape: pv-vmm's (`vcpus`, each with `stats` and
//! `steal_time`) or Cloud Hypervisor's `VmCounters` (`kvm_vcpu<N>` objects of integers).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pv_features::cpuid::{KvmFeatures, Rule};
use serde_json::Value;

use crate::peer::CaseResult;
use crate::{ok, repo_root, GuestAssets, LabCommand, LabMode};

/// One case of `feature-cases.sh`: `NAME CPUS HOG WORK`.
pub type CaseWords = [String; 4];

/// The measured cases that the checks here read, in groups of one L1 run each (a measured
/// pair shares its run): the idle pair (`idle_default`, `idle_dedicated`), the
/// multicast-IPI pair (`ipi_on`, `ipi_off`) and the overcommit trio with a host hog
/// (`tlb_on`, `tlb_off`, `steal_off`). `offerable` is what the VMM offers with every
/// feature on: an `_off` case asks for it without the one feature and what needs it.
pub fn measured_groups(offerable: KvmFeatures) -> [Vec<CaseWords>; 3] {
    let without = |gone: KvmFeatures| {
        format!(
            "boot=OVER,kvm_pv=[{}]",
            Rule::without(offerable, gone).names().join(",")
        )
    };
    let case =
        |name: &str, cpus: &str, hog: &str, work: &str| [name, cpus, hog, work].map(str::to_owned);
    [
        vec![
            case("idle_default", "boot=HOSTCPUS", "0", "idle:3"),
            case(
                "idle_dedicated",
                "boot=HOSTCPUS,dedicated=on",
                "0",
                "idle:3",
            ),
        ],
        vec![
            case("ipi_on", "boot=OVER", "0", "ipi-mask:3"),
            case(
                "ipi_off",
                &without(KvmFeatures::PV_SEND_IPI),
                "0",
                "ipi-mask:3",
            ),
        ],
        vec![
            case("tlb_on", "boot=OVER", "host", "tlb:4,ebizzy:3"),
            case(
                "tlb_off",
                &without(KvmFeatures::PV_TLB_FLUSH),
                "host",
                "tlb:4",
            ),
            case(
                "steal_off",
                &without(KvmFeatures::STEAL_TIME),
                "host",
                "ebizzy:3",
            ),
        ],
    ]
}

/// What the groups' lab runs printed, one after the other.
#[derive(Debug, Default)]
pub struct Joined {
    /// Their stdout.
    pub stdout: String,
    /// Their stderr.
    pub stderr: String,
    /// Where the first one ran.
    pub mode: Option<LabMode>,
    /// The `@@HOST ...@@` line's words (`cpus=2 over=4 tracefs=yes ...`), if printed.
    pub host: String,
}

/// Runs `feature-cases.sh` with `vmm` and `remote` once per group of cases, each group its
/// own L1 run: a crashed L1 (the lab loses one every few minutes on a bad day: 42 per hour
/// of load on 2026-12-03, see scripts/lab/README.md) then costs one group's run, not all.
/// `files` go into L1 beside the binaries; `env` is the script's environment (`VMM_ARGS`,
/// `UNIX_CONSOLE`).
pub fn run_case_groups(
    vmm: &Path,
    remote: &Path,
    assets: &GuestAssets,
    groups: &[Vec<CaseWords>],
    files: &[PathBuf],
    env: &[(&str, String)],
) -> Joined {
    let dir = repo_root().join("integration-tests/lab-cases");
    let script = dir.join("feature-cases.sh");
    let mut joined = Joined::default();
    for group in groups {
        let mut args: Vec<String> = vec![
            "sh".into(),
            script.display().to_string(),
            vmm.display().to_string(),
            remote.display().to_string(),
            assets.kernel.display().to_string(),
            assets.initramfs.display().to_string(),
            "150".into(),
        ];
        args.extend(group.iter().flatten().cloned());
        let mut cmd = LabCommand::new(args)
            .file(vmm)
            .file(remote)
            .file(&assets.kernel)
            .file(&assets.initramfs)
            .file(&script)
            .file(dir.join("common.sh"))
            // A group took up to 5 minutes in the lab on 2026-12-03; room for stalled
            // cases that run again.
            .timeout(Duration::from_secs(900))
            .retries(4);
        for f in files {
            cmd = cmd.file(f);
        }
        for (name, value) in env {
            cmd = cmd.env(*name, value.clone());
        }
        let out = ok(cmd.run());
        if let Some(t) = &out.timing {
            println!(
                "lab: {} cases, L1 boot {:.1} s, whole run {:.1} s",
                group.len(),
                t.l1_boot_s.unwrap_or(f64::NAN),
                t.total_s
            );
        }
        joined.mode.get_or_insert(out.mode);
        joined.stdout.push_str(&out.stdout);
        joined.stderr.push_str(&out.stderr);
    }
    joined.host = joined
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("@@HOST ")?.strip_suffix("@@"))
        .unwrap_or_else(|| panic!("no @@HOST line\n{}\n{}", joined.stdout, joined.stderr))
        .to_owned();
    joined
}

/// A JSON record of a case (vm.info, vm.counters), or a failure naming it.
pub fn json(c: &CaseResult, kind: &str, label: &str) -> Value {
    let text = c
        .record(kind, label)
        .unwrap_or_else(|| panic!("case {}: no {kind} {label} record\n{}", c.name, c.dump()));
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("case {}: {kind} {label} is not JSON ({e}): {text}", c.name))
}

/// Each vCPU's entry of a vm.counters answer (Cloud Hypervisor's `VmCounters` shape, both
/// VMMs: `kvm_vcpu<N>` objects of integers), in vCPU order.
pub fn vcpus(counters: &Value) -> Vec<&Value> {
    (0..)
        .map_while(|id| counters.get(format!("kvm_vcpu{id}")))
        .collect()
}

/// Each vCPU's steal time (ns) in its steal-time record; `None` where it has no readable
/// record.
pub fn vcpu_steal_ns(counters: &Value) -> Vec<Option<u64>> {
    vcpus(counters)
        .into_iter()
        .map(|v| {
            if v["steal_time_enabled"] == 1 {
                v["steal_time_ns"].as_u64()
            } else {
                None
            }
        })
        .collect()
}

/// Whether each vCPU's guest enabled its steal-time record.
pub fn vcpu_steal_enabled(counters: &Value) -> Vec<bool> {
    vcpus(counters)
        .into_iter()
        .map(|v| v["steal_time_enabled"] == 1)
        .collect()
}

/// A KVM statistic summed over the vCPUs.
pub fn vcpu_sum(counters: &Value, name: &str) -> u64 {
    vcpus(counters)
        .into_iter()
        .filter_map(|v| v[name].as_u64())
        .sum()
}

/// Failures and the figures table of one run of checks.
#[derive(Debug, Default)]
pub struct Checks {
    /// What failed, one entry per check.
    pub failures: Vec<String>,
    /// The figures, one line per case and workload.
    pub table: String,
}

impl Checks {
    /// Records `what` as a failure unless `ok`.
    pub fn check(&mut self, ok: bool, what: String) {
        if !ok {
            self.failures.push(what);
        }
    }
}

/// One workload's figures: its own result line, and the growth of the counters around it.
#[derive(Debug, Clone)]
pub struct Work {
    /// Operations the workload completed (its own result line).
    pub ops: u64,
    /// Operations per second.
    pub per_s: f64,
    /// vm.counters right before it.
    pub before: Value,
    /// vm.counters right after it.
    pub after: Value,
    /// The guest's aggregate steal time (USER_HZ ticks) during the workload.
    pub guest_steal: u64,
    /// Flushes the guest requested through the steal-time record (tracefs), if counted.
    pub flush_requested: Option<u64>,
    /// Hypercalls by number (tracefs), if counted without losing events.
    pub hypercall_nrs: Option<BTreeMap<u64, u64>>,
    /// SEND_IPI hypercalls by ICR (delivery mode and vector), likewise.
    pub send_ipi_icr: Option<BTreeMap<u64, u64>>,
    /// x2APIC ICR writes (one exit each) by vector, likewise.
    pub icr_writes: Option<BTreeMap<u64, u64>>,
}

impl Work {
    /// The figures of workload `kind` of case `c`.
    pub fn of(c: &CaseResult, kind: &str) -> Work {
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
    pub fn hypercalls(&self, nr: u64) -> Option<u64> {
        self.hypercall_nrs
            .as_ref()
            .map(|m| m.get(&nr).copied().unwrap_or(0))
    }

    /// Growth of a KVM statistic summed over the vCPUs.
    pub fn delta(&self, stat: &str) -> u64 {
        vcpu_sum(&self.after, stat).saturating_sub(vcpu_sum(&self.before, stat))
    }

    /// Growth of each vCPU's steal time (ns) in its steal-time record; None where the
    /// record was not readable.
    pub fn steal_ns(&self) -> Vec<Option<u64>> {
        vcpu_steal_ns(&self.before)
            .into_iter()
            .zip(vcpu_steal_ns(&self.after))
            .map(|(b, a)| Some(a?.saturating_sub(b?)))
            .collect()
    }

    /// Growth of a KVM statistic per operation of the workload.
    pub fn per_op(&self, stat: &str) -> f64 {
        self.delta(stat) as f64 / self.ops.max(1) as f64
    }
}

/// `0xa:914 0xb:257 overrun:0` into {10: 914, 11: 257}; None if the trace lost events.
pub fn parse_nrs(text: &str) -> Option<BTreeMap<u64, u64>> {
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
pub const KVM_HC_KICK_CPU: u64 = 5;
pub const KVM_HC_SEND_IPI: u64 = 10;
pub const KVM_HC_SCHED_YIELD: u64 = 11;
/// The ICR of a fixed-delivery IPI on Linux's CALL_FUNCTION_VECTOR (smp_call_function_many:
/// what an expedited membarrier sends).
pub const ICR_CALL_FUNCTION: u64 = 0xfc;
/// The ICR of a fixed-delivery IPI on Linux's LOCAL_TIMER_VECTOR: a tick-broadcast IPI,
/// which a guest with a TSC-deadline local APIC timer never sends.
pub const ICR_LOCAL_TIMER: u64 = 0xec;

/// PV send-IPI: cases `ipi_on` (the feature offered) and `ipi_off` (offered without it),
/// each with the `ipi-mask` workload on an overcommitted VM.
pub fn check_send_ipi<'a>(find: &dyn Fn(&str) -> &'a CaseResult, checks: &mut Checks) {
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
            checks.table,
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
    checks.check(
        on.ops > 0 && off.ops > 0,
        format!("membarrier calls: on {}, off {}", on.ops, off.ops),
    );
    checks.check(
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
        checks.check(
            by_icr_write(&on).is_some_and(|n| n as f64 <= 0.1 * on.ops as f64 + 5.0),
            format!(
                "PV send-IPI on: {:?} CALL_FUNCTION IPIs by x2APIC ICR write for {} membarrier \
                 calls (want about 0, at most 0.1 per call + 5: multicasts go by hypercall)",
                by_icr_write(&on),
                on.ops
            ),
        );
        checks.check(
            by_icr_write(&off).unwrap_or(0) >= off.ops,
            format!(
                "PV send-IPI off: {:?} CALL_FUNCTION IPIs by x2APIC ICR write for {} \
                 membarrier calls (want at least one per call: two targets each, most calls)",
                by_icr_write(&off),
                off.ops
            ),
        );
    }
    checks.check(
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
                checks.table,
                "{:<22} exits to send one multicast: PV send-IPI on {e_on:.2}, off {e_off:.2}",
                "ipi"
            );
            checks.check(
                e_on <= 1.2 && e_off > e_on,
                format!("exits per multicast send: on {e_on:.2} (want <= 1.2), off {e_off:.2}"),
            );
        }
        _ => println!(
            "NOT EXERCISED: exits per multicast send (no tracefs kvm_msr/kvm_hypercall, or lost events)"
        ),
    }
}

/// Steal time and PV TLB flush under overcommit with a host CPU hog: cases `tlb_on`
/// (`tlb` and `ebizzy` workloads, everything offered), `tlb_off` (`tlb`, without
/// pv_tlb_flush) and `steal_off` (`ebizzy`, without steal_time). `tracefs`: the host
/// counted the flushes requested through the steal-time record.
pub fn check_steal_and_tlb<'a>(
    find: &dyn Fn(&str) -> &'a CaseResult,
    tracefs: bool,
    checks: &mut Checks,
) {
    // 4. Steal time under overcommit with a host hog: the guest sees it, every vCPU's
    // record grows, KVM reports preemptions; with steal_time off the guest sees none.
    let tlb_on_case = find("tlb_on");
    let busy = Work::of(tlb_on_case, "ebizzy");
    let steal = busy.steal_ns();
    checks.check(
        busy.guest_steal > 0,
        "guest /proc/stat steal did not grow under overcommit + hog".to_owned(),
    );
    checks.check(
        !steal.is_empty() && steal.iter().all(|s| s.is_some_and(|n| n > 0)),
        format!("vm.counters steal time per vCPU: {steal:?}"),
    );
    checks.check(
        busy.delta("preemption_reported") > 0,
        "preemption_reported did not grow".to_owned(),
    );
    let nosteal = Work::of(find("steal_off"), "ebizzy");
    let enabled = vcpu_steal_enabled(&nosteal.after);
    checks.check(
        nosteal.guest_steal == 0 && !enabled.is_empty() && !enabled.iter().any(|e| *e),
        format!(
            "steal_time off: guest steal +{}, steal-time records enabled {enabled:?}",
            nosteal.guest_steal
        ),
    );
    for (name, w) in [("tlb_on ebizzy", &busy), ("steal_off ebizzy", &nosteal)] {
        let _ = writeln!(
            checks.table,
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
            checks.table,
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
    checks.check(
        tlb_on.ops > 0 && tlb_off.ops > 0,
        format!("unmaps: on {}, off {}", tlb_on.ops, tlb_off.ops),
    );
    if tracefs {
        checks.check(
            tlb_on.flush_requested.is_some_and(|n| n > 0),
            format!(
                "PV TLB flush on: {:?} flushes requested through the steal-time record",
                tlb_on.flush_requested
            ),
        );
        checks.check(
            tlb_off.flush_requested == Some(0),
            format!(
                "PV TLB flush off: {:?} flushes requested through the steal-time record",
                tlb_off.flush_requested
            ),
        );
    } else {
        println!("NOT EXERCISED: this host has no tracefs kvm_pv_tlb_flush event; the PV TLB flush requests were not counted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn counters_are_read_in_cloud_hypervisors_shape() {
        let c = serde_json::json!({
            "kvm_vm": {"remote_tlb_flush": 1},
            "kvm_vcpu0": {"halt_exits": 3, "steal_time_enabled": 1, "steal_time_ns": 10},
            "kvm_vcpu1": {"halt_exits": 4, "steal_time_enabled": 0},
            "vmm_exits_vcpu0": {"io": 9},
            "_disk0": {"read_bytes": 512},
        });
        assert_eq!(vcpus(&c).len(), 2);
        assert_eq!(vcpu_sum(&c, "halt_exits"), 7, "{c}");
        assert_eq!(vcpu_steal_ns(&c), vec![Some(10), None], "{c}");
        assert_eq!(vcpu_steal_enabled(&c), vec![true, false], "{c}");
        assert_eq!(vcpu_sum(&serde_json::json!({}), "halt_exits"), 0);
    }
}
