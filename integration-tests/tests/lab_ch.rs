//! The patched Cloud Hypervisor (`patches/cloud-hypervisor/`, built by
//! `scripts/build-cloud-hypervisor`) in the KVM lab, driven by `ch-remote`: the guest's
//! view of each configuration (its CPUID dump and its kernel's `kvm-guest:` lines) against
//! what `vm.info`'s `kvm_pv.effective` says, the KVM leaves at 0x40000100 with
//! `kvm_hyperv=on`, exactly the listed features with a list, and bad configurations refused
//! before any guest starts, through the same case script as `lab_features` (`feature-cases.sh`).
//!
//! Passed in the lab on 2026-12-03 (206 s, one case retried after a guest triple fault).
//! Building Cloud Hypervisor takes about 15 minutes on two cores the first time, so this
//! test runs when `PV_CH_LAB=1` is set; otherwise it says loudly that it did not run (in
//! the list `scripts/test` prints at the end).

use std::path::PathBuf;
use std::time::Duration;

use integration_tests::peer::{
    assert_guest_logs_clean, effective_state, expected_pv_lines, json_names, parse_cases,
};
use integration_tests::{ok, repo_root, report_case_retries, report_retry, run_script, script};
use integration_tests::{GuestAssets, LabCommand};
use pv_features::cpuid::{KVM_CPUID_ALT_BASE, KVM_CPUID_BASE};
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

/// `cloud-hypervisor` and `ch-remote` with the series, built (or found in the cache) by
/// `scripts/build-cloud-hypervisor`.
fn ch_binaries() -> (PathBuf, PathBuf) {
    let stdout = ok(run_script(&script("build-cloud-hypervisor"), &[]));
    let dir = PathBuf::from(stdout.lines().last().unwrap_or_default());
    (dir.join("cloud-hypervisor"), dir.join("ch-remote"))
}

#[test]
fn lab_ch_guest_view_and_refusals() {
    if std::env::var_os("PV_CH_LAB").is_none() {
        report_retry(
            "NOT RUN: lab_ch (the patched Cloud Hypervisor in the lab): set PV_CH_LAB=1; it builds Cloud Hypervisor first (about 15 minutes on two cores)",
        );
        return;
    }
    let assets = ok(GuestAssets::prepare());
    let (ch, remote) = ch_binaries();
    let dir = repo_root().join("integration-tests/lab-cases");
    let case_script = dir.join("feature-cases.sh");
    let mut args: Vec<String> = vec![
        "sh".into(),
        case_script.display().to_string(),
        ch.display().to_string(),
        remote.display().to_string(),
        assets.kernel.display().to_string(),
        assets.initramfs.display().to_string(),
        "150".into(),
    ];
    for (name, cpus) in BOOTED {
        args.extend([name.into(), cpus.into(), "0".into(), "-".into()]);
    }
    for (name, cpus, _) in REFUSED {
        args.extend([name.into(), cpus.into(), "0".into(), "refuse".into()]);
    }
    let out = ok(LabCommand::new(args)
        .file(&ch)
        .file(&remote)
        .file(&assets.kernel)
        .file(&assets.initramfs)
        .file(&case_script)
        .file(dir.join("common.sh"))
        // Cloud Hypervisor's console is a tty by default; the case script uses the serial,
        // whose input Cloud Hypervisor takes from a terminal only: the guest idles instead
        // of giving a shell.
        .env("VMM_ARGS", "--console off")
        .env("NO_CONSOLE_INPUT", "1")
        .timeout(Duration::from_secs(1500))
        .retries(3)
        .run());
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
