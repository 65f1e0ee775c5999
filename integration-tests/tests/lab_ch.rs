//! The patched Cloud Hypervisor (`patches/cloud-hypervisor/`, built by
//! `scripts/build-cloud-hypervisor` in its dev profile, about a minute from nothing on two
//! cores) in the KVM lab, driven by `ch-remote`, through the same case script as
//! `lab_features` (`feature-cases.sh`; the guest's console through Cloud Hypervisor's serial
//! socket, which `unix-console` carries in L1):
//!
//! - the guest's view of each configuration (its CPUID dump and its kernel's `kvm-guest:`
//!   lines) against what `vm.info`'s `kvm_pv.effective` says, the KVM leaves at 0x40000100
//!   with `kvm_hyperv=on`, exactly the listed features with a list;
//! - bad configurations refused before any guest starts;
//! - `lab_features`' measured cases with its own checks (`integration_tests::features`):
//!   HLT exits of an idle guest (none with `dedicated=on`), SEND_IPI hypercalls under the
//!   multicast-IPI load with PV send-IPI and none without, steal time under overcommit with
//!   a host CPU hog, flushes requested through the steal-time record with PV TLB flush and
//!   none without, all read from Cloud Hypervisor's `vm.counters` and the host's tracefs;
//! - (`ch-migrate.sh`) a running guest under a host CPU hog through pause, snapshot, restore
//!   into a second process and live migration into a third: the same effective PV state,
//!   steal time still growing in the host's records and in the guest's own `/proc/stat`, no
//!   kernel warning; and a snapshot edited to claim a feature Cloud Hypervisor does not back
//!   is refused with one error.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use hypervisor_glue::counters;
use integration_tests::features::{self, CaseWords, Checks, Work};
use integration_tests::peer::{
    assert_guest_logs_clean, effective_state, expected_pv_lines, json_names, parse_cases,
};
use integration_tests::{ok, repo_root, report_case_retries, run_script, script};
use integration_tests::{GuestAssets, LabCommand};
use pv_features::cpuid::{KvmFeatures, KVM_CPUID_ALT_BASE, KVM_CPUID_BASE};
use serde_json::Value;

/// Cases that boot: name, `--cpus`.
const BOOTED: [(&str, &str); 6] = [
    ("default", "boot=2"),
    (
        "list",
        "boot=2,kvm_pv=[clocksource2,steal_time,pv_tlb_flush,pv_send_ipi]",
    ),
    ("dedicated", "boot=2,dedicated=on"),
    ("hyperv", "boot=2,kvm_hyperv=on"),
    // Not kvm_pv=off: without kvmclock a Linux guest of Cloud Hypervisor (no PIT, no HPET)
    // cannot calibrate its clocks and prints nothing (seen in the lab on 2026-12-03).
    ("minimal", "boot=2,kvm_pv=[clocksource2]"),
    ("halt0", "boot=2,halt_poll_ns=0,enforce_pv_cpuid=off"),
];

/// Cases Cloud Hypervisor must refuse before a guest starts: name, `--cpus`, words its
/// error must hold.
const REFUSED: [(&str, &str, &str); 4] = [
    (
        "tlb_without_steal",
        "boot=2,kvm_pv=[pv_tlb_flush]",
        "--cpus kvm_pv=[pv_tlb_flush]: pv_tlb_flush needs steal_time",
    ),
    (
        "bad_exit",
        "boot=2,disable_exits=[hlt,nap]",
        "--cpus disable_exits=[hlt,nap]: ",
    ),
    (
        "bad_halt",
        "boot=2,halt_poll_ns=soon",
        "--cpus halt_poll_ns=soon: expected nanoseconds",
    ),
    ("unknown_key", "boot=2,kvm_pvv=all", "kvm_pvv"),
];

/// The features Cloud Hypervisor can offer: what KVM can, and msi_ext_dest_id, which it
/// implements itself.
fn offerable() -> KvmFeatures {
    (KvmFeatures::all() - KvmFeatures::VMM_PROVIDED) | KvmFeatures::MSI_EXT_DEST_ID
}

/// `lab_features`' measured cases, the idle and the multicast-IPI pairs sharing an L1 run.
fn measured_groups() -> Vec<Vec<CaseWords>> {
    let [idle, ipi, overcommit] = features::measured_groups(offerable());
    vec![idle.into_iter().chain(ipi).collect(), overcommit]
}

/// `cloud-hypervisor` and `ch-remote` with the series, built (or found in the cache) by
/// `scripts/build-cloud-hypervisor`.
fn ch_binaries() -> (PathBuf, PathBuf) {
    let stdout = ok(run_script(&script("build-cloud-hypervisor"), &[]));
    let dir = PathBuf::from(stdout.lines().last().unwrap_or_default());
    (dir.join("cloud-hypervisor"), dir.join("ch-remote"))
}

#[test]
fn lab_ch_guest_view_and_refusals() {
    let assets = ok(GuestAssets::prepare());
    let (ch, remote) = ch_binaries();
    let console = PathBuf::from(
        ok(run_script(
            &script("build-guest-initramfs"),
            &["--program", "unix-console"],
        ))
        .trim(),
    );
    let mut groups: Vec<Vec<CaseWords>> = vec![BOOTED
        .iter()
        .map(|(name, cpus)| [*name, *cpus, "0", "-"].map(str::to_owned))
        .chain(
            REFUSED
                .iter()
                .map(|(name, cpus, _)| [*name, *cpus, "0", "refuse"].map(str::to_owned)),
        )
        .collect()];
    groups.extend(measured_groups());
    // Cloud Hypervisor's console is a tty by default, and it takes serial input from a
    // terminal only: the guest's console goes through its serial socket (unix-console in
    // L1 carries it).
    let out = features::run_case_groups(
        &ch,
        &remote,
        &assets,
        &groups,
        std::slice::from_ref(&console),
        &[
            ("VMM_ARGS", "--console off".to_owned()),
            ("UNIX_CONSOLE", console.display().to_string()),
        ],
    );
    let host = out.host.clone();
    println!("host: {host}");
    let results = parse_cases(&out.stdout);
    assert_guest_logs_clean(&results);
    report_case_retries(&out.stdout);
    let find = |name: &str| {
        results
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("case {name} missing\n{}\n{}", out.stdout, out.stderr))
    };
    let mut failures = Vec::new();
    for (name, cpus) in BOOTED {
        let c = find(name);
        if c.end != Some(Ok(())) || c.stat("vmm_exit") != 0 {
            failures.push(format!(
                "{name}: did not boot and power off cleanly\n{}",
                c.dump()
            ));
            continue;
        }
        let info: Value = c
            .record("info", "-")
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_else(|| panic!("{name}: no vm.info JSON\n{}", c.dump()));
        let eff = &info["kvm_pv"]["effective"];
        assert_eq!(
            info["kvm_pv"]["effective_is_live"], true,
            "{name}: vm.info of a running VM: {info}"
        );
        let (leaves, features, hints) = effective_state(eff);
        let guest = c
            .guest_kvm_cpuid()
            .unwrap_or_else(|e| panic!("{e}\n{}", c.dump()));
        let want_base = if cpus.contains("kvm_hyperv=on") {
            KVM_CPUID_ALT_BASE
        } else {
            KVM_CPUID_BASE
        };
        let want = leaves.then_some((want_base, features, hints));
        println!(
            "case {name} (--cpus {cpus}): vm.info effective leaves={leaves} features {features:#x} [{features}] hints [{hints}]; guest CPUID {guest:x?}"
        );
        if guest != want {
            failures.push(format!(
                "{name}: the guest's KVM leaves {guest:x?} are not vm.info's effective {want:x?}"
            ));
        }
        let lines = c.pv_guest_lines();
        let want_lines = expected_pv_lines(leaves, features, hints, 2);
        let missing: Vec<_> = want_lines.difference(&lines).collect();
        if !missing.is_empty() {
            failures.push(format!(
                "{name}: the guest did not print {missing:?}; it printed {lines:?}"
            ));
        }
    }
    // What each configuration means, beyond agreeing with vm.info.
    let effective = |name: &str| {
        let c = find(name);
        let info: Value = c
            .record("info", "-")
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default();
        info["kvm_pv"]["effective"].clone()
    };
    let default = effective("default");
    let default_features: Vec<String> = json_names(&default["features"], |n| Some(n.to_owned()));
    for must in [
        "steal_time",
        "pv_tlb_flush",
        "pv_send_ipi",
        "msi_ext_dest_id",
    ] {
        if !default_features.iter().any(|f| f == must) {
            failures.push(format!(
                "default: {must} not offered (Cloud Hypervisor backs msi_ext_dest_id, the host the rest): {default}"
            ));
        }
    }
    let dedicated = effective("dedicated");
    if dedicated["hints"] != serde_json::json!(["realtime"]) {
        failures.push(format!("dedicated: no realtime hint: {dedicated}"));
    }
    if !find("dedicated")
        .pv_guest_lines()
        .contains("PV spinlocks disabled with KVM_HINTS_REALTIME hints")
    {
        failures.push("dedicated: the guest did not see the realtime hint".to_owned());
    }
    if effective("minimal")["features"] != serde_json::json!(["clocksource2"]) {
        failures.push(format!(
            "minimal: exactly clocksource2 asked for: {}",
            effective("minimal")
        ));
    }
    if effective("halt0")["halt_poll_ns"] != 0 || effective("halt0")["enforce_pv_cpuid"] != false {
        failures.push(format!("halt0: {}", effective("halt0")));
    }
    // The measured cases, with lab_features' own checks (integration_tests::features).
    let mut checks = Checks::default();
    for c in measured_groups().iter().flatten() {
        let r = find(&c[0]);
        checks.check(
            r.end == Some(Ok(())) && r.stat("vmm_exit") == 0,
            format!(
                "{}: did not boot, run its workloads and power off cleanly\n{}",
                c[0],
                r.dump()
            ),
        );
    }
    // HLT exits: an idle guest makes them, unless dedicated=on disabled them.
    let idle = |name: &str| Work::of(find(name), "idle");
    let (d, ded) = (idle("idle_default"), idle("idle_dedicated"));
    checks.check(
        d.delta("halt_exits") > 0,
        format!(
            "idle default guest: halt_exits grew {}",
            d.delta("halt_exits")
        ),
    );
    let ded_exits = json_names(&effective("idle_dedicated")["disable_exits"], |n| {
        Some(n.to_owned())
    });
    if ded_exits.iter().any(|e| e == "hlt") {
        checks.check(
            ded.delta("halt_exits") == 0,
            format!(
                "dedicated: HLT exits disabled, yet idle halt_exits grew {}",
                ded.delta("halt_exits")
            ),
        );
    } else {
        println!("NOT EXERCISED: this host refuses to disable HLT exits ({ded_exits:?})");
    }
    for (name, w) in [("idle_default", &d), ("idle_dedicated", &ded)] {
        let _ = writeln!(
            checks.table,
            "{name:<22} idle 3 s: halt_exits +{}, exits +{}",
            w.delta("halt_exits"),
            w.delta("exits")
        );
    }
    features::check_send_ipi(&find, &mut checks);
    features::check_steal_and_tlb(&find, host.contains("tracefs=yes"), &mut checks);
    println!("\n{}", checks.table);
    failures.extend(checks.failures);
    for (name, cpus, words) in REFUSED {
        let c = find(name);
        let log = c.vmm_log.join("\n");
        let status = c.stat("vmm_exit");
        let booted = c.guest_marker("GUEST-UP").is_some();
        println!("refused {name} (--cpus {cpus}): status {status}");
        if status == 0 || booted || !log.contains(words) {
            failures.push(format!(
                "{name}: --cpus {cpus} must end Cloud Hypervisor before a guest starts with an error naming `{words}`\n{}",
                c.dump()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// `@@REC <stage> <kind> <payload>@@` lines of `ch-migrate.sh`: the JSON of `kind` at
/// `stage` (`Value::Null` when missing or not JSON).
fn migrate_record(stdout: &str, stage: &str, kind: &str) -> Value {
    let prefix = format!("@@REC {stage} {kind} ");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.strip_suffix("@@"))
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

/// The guest's steal time (USER_HZ ticks) at each `@@GUEST-TICK@@` under process `vmm`
/// (A, B or C of `ch-migrate.sh`).
fn guest_ticks(stdout: &str, vmm: &str) -> Vec<u64> {
    let prefix = format!("L2{vmm}| @@GUEST-TICK ");
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix)?.strip_suffix("@@"))
        .filter_map(|rest| rest.split_whitespace().nth(1)?.parse().ok())
        .collect()
}

/// Each vCPU's `steal_time_ns` in a vm.counters answer (`None` where it has none).
fn steal_ns(counters: &Value) -> Vec<Option<u64>> {
    (0..2)
        .map(|id| counters[counters::vcpu_key(id)]["steal_time_ns"].as_u64())
        .collect()
}

#[test]
fn lab_ch_snapshot_restore_and_migration() {
    let assets = ok(GuestAssets::prepare());
    let (ch, remote) = ch_binaries();
    let dir = repo_root().join("integration-tests/lab-cases");
    let case_script = dir.join("ch-migrate.sh");
    let args: Vec<String> = vec![
        "sh".into(),
        case_script.display().to_string(),
        ch.display().to_string(),
        remote.display().to_string(),
        assets.kernel.display().to_string(),
        assets.initramfs.display().to_string(),
        "boot=2".into(),
    ];
    let out = LabCommand::new(args)
        .file(&ch)
        .file(&remote)
        .file(&assets.kernel)
        .file(&assets.initramfs)
        .file(&case_script)
        .file(dir.join("common.sh"))
        .timeout(Duration::from_secs(1200))
        .run();
    let out = ok(out);
    let stdout = &out.stdout;
    let dump = || format!("{stdout}\n{}", out.stderr);
    for step in ["boot", "pause", "snapshot", "restore", "migrate", "refuse"] {
        assert!(
            stdout.contains(&format!("@@STEP {step} ok@@")),
            "step {step} did not pass\n{}",
            dump()
        );
    }
    let mut failures = Vec::new();

    // The PV state is the one the guest booted with, after a restore and a migration.
    let effective =
        |stage: &str| migrate_record(stdout, stage, "info")["kvm_pv"]["effective"].clone();
    let booted = effective("booted");
    println!("booted with {booted}");
    if booted.is_null() {
        failures.push("no vm.info of the booted VM".to_owned());
    }
    for stage in ["restored", "migrated"] {
        if effective(stage) != booted {
            failures.push(format!(
                "{stage}: effective PV state {} is not the booted one",
                effective(stage)
            ));
        }
    }

    // Steal time: on for both vCPUs at every stage, carried through (the record is in guest
    // memory, its MSR in the vCPU state) and growing again under the host's CPU hog.
    let stages = [
        "booted",
        "hog",
        "paused",
        "restored-1",
        "restored-2",
        "migrated-1",
        "migrated-2",
    ];
    let steal: Vec<Vec<Option<u64>>> = stages
        .iter()
        .map(|s| steal_ns(&migrate_record(stdout, s, "counters")))
        .collect();
    for (stage, ns) in stages.iter().zip(&steal) {
        println!("{stage:<11} steal_time_ns {ns:?}");
        if ns.iter().any(Option::is_none) {
            failures.push(format!(
                "{stage}: a vCPU without an enabled steal-time record: {}",
                migrate_record(stdout, stage, "counters")
            ));
        }
    }
    let total = |i: usize| steal[i].iter().flatten().sum::<u64>();
    let grew = |from: usize, to: usize| total(to) > total(from);
    for (from, to, what) in [
        (0, 1, "under the host's hog before the snapshot"),
        (3, 4, "after the restore"),
        (5, 6, "after the migration"),
    ] {
        if !grew(from, to) {
            failures.push(format!(
                "steal time did not grow {what}: {} -> {} ns",
                total(from),
                total(to)
            ));
        }
    }
    if total(3) < total(2) {
        failures.push(format!(
            "the restored steal-time records lost time: {} ns paused, {} ns restored",
            total(2),
            total(3)
        ));
    }
    let kvm_stats = migrate_record(stdout, "migrated-2", "counters");
    if kvm_stats[counters::vcpu_key(0)]["exits"].as_u64().is_none() {
        failures.push(format!(
            "no KVM statistics per vCPU after the migration: {kvm_stats}"
        ));
    }

    // The guest's own view: its steal time goes on growing under B and C.
    let (a, b, c) = (
        guest_ticks(stdout, "A"),
        guest_ticks(stdout, "B"),
        guest_ticks(stdout, "C"),
    );
    println!(
        "guest steal ticks: A {:?}..{:?}, B {:?}..{:?}, C {:?}..{:?}",
        a.first(),
        a.last(),
        b.first(),
        b.last(),
        c.first(),
        c.last()
    );
    for (name, ticks) in [("B (restored)", &b), ("C (migrated)", &c)] {
        if ticks.len() < 2 || ticks.first() > ticks.last() {
            failures.push(format!("guest under {name}: ticks {ticks:?}"));
        }
    }
    if b.first() < a.last() {
        failures.push(format!(
            "the restored guest's steal time went back: A {a:?}, B {b:?}"
        ));
    }
    let faults: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            l.starts_with("L2")
                && (l.contains("@@GUEST-DMESG")
                    || integration_tests::peer::GUEST_LOG_FAULTS
                        .iter()
                        .any(|f| l.contains(f)))
        })
        .collect();
    if !faults.is_empty() {
        failures.push(format!(
            "the guest's own log shows a fault:\n{}",
            faults.join("\n")
        ));
    }

    // A snapshot that claims migration_control (which Cloud Hypervisor does not back).
    let refused = stdout
        .lines()
        .find(|l| l.starts_with("@@REFUSED "))
        .unwrap_or_default();
    let message: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("REFUSE| "))
        .collect();
    println!("refused restore: {refused} {message:?}");
    if refused.contains("status=0")
        || !refused.contains("vmm=alive")
        || !message
            .iter()
            .any(|l| l.contains("does not back [migration_control]"))
    {
        failures.push(format!(
            "restoring a snapshot with migration_control: {refused}\n{}",
            message.join("\n")
        ));
    }
    assert!(
        failures.is_empty(),
        "{}\n\n{}",
        failures.join("\n\n"),
        dump()
    );
}
