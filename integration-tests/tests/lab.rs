//! Tests that boot the KVM lab (or, on a host with hardware virtualization, run directly).
//!
//! This binary drives `scripts/lab/run` itself, so it runs on the host even when
//! `scripts/lab/cargo-runner` is the cargo runner (the runner passes `lab-*` binaries
//! through). Every lab failure fails the test with L1's console tail in the message.

use std::path::PathBuf;
use std::time::Duration;

use integration_tests::peer::{parse_cases, CaseResult};
use integration_tests::{
    ok, repo_root, report_case_retries, which, GuestAssets, LabCommand, LabMode, PV_GUEST_LINES,
};

/// L1 (or the host) has a real `/dev/kvm` backed by kvm_amd (kvm_intel on a direct Intel
/// host).
#[test]
fn lab_has_real_kvm() {
    let out = ok(LabCommand::new([
        "sh",
        "-c",
        "ls -l /dev/kvm && test -c /dev/kvm && \
         for m in kvm_amd kvm_intel; do [ -d /sys/module/$m ] && echo module=$m; done; \
         for p in npt nested avic; do \
           [ -r /sys/module/kvm_amd/parameters/$p ] && echo kvm_amd.$p=$(cat /sys/module/kvm_amd/parameters/$p); \
         done; true",
    ])
    .timeout(Duration::from_secs(120))
    .run());
    let out = ok(out.success("lab_has_real_kvm"));
    println!("{}", out.stdout);
    assert!(
        out.stdout.contains("module=kvm_amd") || out.stdout.contains("module=kvm_intel"),
        "no kvm_amd/kvm_intel module: {}",
        out.stdout
    );
    if out.mode == LabMode::Lab {
        assert!(out.stdout.contains("module=kvm_amd"), "{}", out.stdout);
        let t = out.timing.expect("the lab runner prints its timing line");
        println!(
            "L1 boot to kvm ready: {:.2} s; full cycle: {:.2} s (image {:.2} s)",
            t.l1_boot_s.unwrap_or(f64::NAN),
            t.total_s,
            t.image_s
        );
    }
}

/// QEMU (the peer VMM) inside L1 boots the cloud kernel as L2 with KVM: with QEMU's
/// defaults the guest enables PV IPIs, PV TLB flush, PV sched yield and PV spinlocks;
/// with those four flags off it enables none. Prints the VMs' KVM statistics.
#[test]
fn qemu_peer_pv_lines() {
    let assets = ok(GuestAssets::prepare());
    let qemu = std::env::var_os("PV_LAB_QEMU")
        .map(PathBuf::from)
        .or_else(|| which("qemu-system-x86_64"))
        .expect("qemu-system-x86_64 on PATH (scripts/lab/install-qemu installs it)");
    // What QEMU reads for a -kernel boot with -nodefaults (found with strace).
    let data = [
        "/usr/share/seabios/bios-256k.bin",
        "/usr/share/qemu/linuxboot_dma.bin",
        "/usr/share/qemu/kvmvapic.bin",
    ];
    let case = repo_root().join("integration-tests/lab-cases/qemu-peer.sh");
    const OFF: &str =
        "host,kvm-pv-ipi=off,kvm-pv-tlb-flush=off,kvm-pv-sched-yield=off,kvm-pv-unhalt=off";

    let mut cmd = LabCommand::new([
        "sh".into(),
        case.clone().into_os_string(),
        qemu.clone().into_os_string(),
        assets.kernel.clone().into_os_string(),
        assets.initramfs.clone().into_os_string(),
        "4".into(),
        "120".into(),
        "on".into(),
        "host".into(),
        "off".into(),
        OFF.into(),
    ])
    .file(&qemu)
    .file(&assets.kernel)
    .file(&assets.initramfs)
    .file(&case)
    .file(case.with_file_name("common.sh"))
    .timeout(Duration::from_secs(300));
    for d in data {
        cmd = cmd.file(d);
    }
    let out = ok(cmd.run());
    // Cases run again after the lab's early L2 reset: loud.
    report_case_retries(&out.stdout);
    let out = ok(out.success("qemu-peer.sh"));
    let log = out
        .log_dir
        .as_ref()
        .map(|d| d.join("stdout.log").display().to_string())
        .unwrap_or_else(|| "(direct mode: not kept)".to_string());

    let cases = parse_cases(&out.stdout);
    integration_tests::peer::assert_guest_logs_clean(&cases);
    let find = |name: &str| -> &CaseResult {
        cases
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("case {name} missing from the output:\n{}", out.stdout))
    };
    let on = find("on");
    let off = find("off");
    for c in [on, off] {
        assert_eq!(
            c.end,
            Some(Ok(())),
            "case {} did not finish:\n{}",
            c.name,
            c.guest_log.join("\n")
        );
        println!(
            "case {} (-cpu {}): L2 boot {:.2} s; kvm-guest lines: {:?}",
            c.name,
            c.cpu,
            c.boot_s.unwrap_or(f64::NAN),
            c.kvm_guest_lines()
        );
        let shown = [
            "exits",
            "hypercalls",
            "halt_exits",
            "tlb_flush",
            "directed_yield_attempted",
            "directed_yield_successful",
            "preemption_reported",
            "preemption_other",
            "irq_exits",
            "io_exits",
        ];
        let stats: Vec<String> = shown.iter().map(|s| format!("{s}={}", c.stat(s))).collect();
        println!("  KVM stats: {}", stats.join(" "));
    }
    if let Some(t) = out.timing {
        println!(
            "lab: L1 boot {:.2} s, full cycle {:.2} s; full output: {log}",
            t.l1_boot_s.unwrap_or(f64::NAN),
            t.total_s
        );
    }

    assert_eq!(
        on.pv_lines_present(),
        PV_GUEST_LINES.to_vec(),
        "with QEMU's defaults the guest must print all four PV lines; got {:?}\nguest log:\n{}",
        on.kvm_guest_lines(),
        on.guest_log.join("\n")
    );
    assert!(
        off.pv_lines_present().is_empty(),
        "with the PV flags off the guest must print none of the PV lines; got {:?}\nguest log:\n{}",
        off.kvm_guest_lines(),
        off.guest_log.join("\n")
    );
    assert!(
        !on.stats.is_empty() && !off.stats.is_empty(),
        "no KVM statistics read from debugfs"
    );
    assert!(
        on.stat("hypercalls") > 0,
        "PV on: the guest made no hypercalls"
    );
    assert_eq!(
        off.stat("hypercalls"),
        0,
        "PV off: the guest made hypercalls"
    );
}
