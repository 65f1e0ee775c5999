//! pv-vmm boots the Debian cloud kernel in the KVM lab (or directly on a bare-metal
//! runner): the guest's view (its `kvm-guest:` lines and its KVM CPUID leaves) and the
//! host's (KVM statistics of the VM while the guest idles or runs a load), case by case, in
//! one L1 boot. `kvm_hyperv=on` is one of the cases: the guest must keep every KVM PV
//! feature with the KVM leaves at 0x40000100 beside the Hyper-V block.
//!
//! Like `lab.rs` this binary drives `scripts/lab/run` itself (`lab*` binaries run on the
//! host under the cargo runner).

use std::time::Duration;

use integration_tests::peer::{parse_cases, CaseResult};
use integration_tests::{
    ok, repo_root, report_case_retries, vmm_binaries, GuestAssets, LabCommand, LabMode,
    PV_GUEST_LINES,
};
use pv_features::cpuid::{KvmFeatures, KvmHints};

/// The KVM leaves the guest found: (base, features, hints), or None for "none".
fn guest_cpuid(case: &CaseResult) -> Option<(u32, KvmFeatures, KvmHints)> {
    case.guest_kvm_cpuid().unwrap_or_else(|e| panic!("{e}"))
}

/// What pv-vmm logged it advertises: the `[...]` after `label` in its "KVM leaves" line.
fn vmm_logged(case: &CaseResult, label: &str) -> String {
    let line = case
        .vmm_log
        .iter()
        .find(|l| l.contains("KVM leaves at"))
        .unwrap_or_else(|| panic!("case {}: pv-vmm did not log its KVM leaves", case.name));
    let start = line
        .find(label)
        .map(|i| i + label.len())
        .unwrap_or_else(|| panic!("case {}: no `{label}` in `{line}`", case.name));
    line[start..]
        .split(']')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The guest's view of the first hypervisor block: (highest leaf, interface, vendor).
fn guest_block0(case: &CaseResult) -> (u32, String, String) {
    let text = case
        .guest_marker("CPUID-HV ")
        .unwrap_or_else(|| panic!("case {}: no CPUID-HV line in the guest log", case.name));
    let (head, vendor) = text
        .split_once(" vendor=")
        .unwrap_or_else(|| panic!("case {}: bad CPUID-HV line `{text}`", case.name));
    let field = |key: &str| {
        head.split(' ')
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("case {}: no {key} in `{text}`", case.name))
    };
    let max = u32::from_str_radix(field("max=").trim_start_matches("0x"), 16)
        .unwrap_or_else(|e| panic!("case {}: `{text}`: {e}", case.name));
    (max, field("interface=").to_owned(), vendor.to_owned())
}

/// The guest's `pv-load` report: its number of operations.
fn load_ops(case: &CaseResult) -> u64 {
    let text = case.guest_marker("WORK ").unwrap_or_else(|| {
        panic!(
            "case {}: no @@WORK line (the load did not finish)\n{}",
            case.name,
            dump(case)
        )
    });
    text.split(' ')
        .find_map(|w| w.strip_prefix("ops="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("case {}: bad @@WORK line `{text}`", case.name))
}

fn dump(case: &CaseResult) -> String {
    format!(
        "guest:\n{}\npv-vmm:\n{}",
        case.guest_log.join("\n"),
        case.vmm_log.join("\n")
    )
}

#[test]
fn lab_pv_vmm_boots_with_the_pv_features() {
    let assets = ok(GuestAssets::prepare());
    let (vmm, _) = vmm_binaries();
    let script = repo_root().join("integration-tests/lab-cases/vmm-cases.sh");
    // The multicast-IPI load: with PV send-IPI each membarrier call is one SEND_IPI
    // hypercall to vCPUs 1 and 2 (ipi-mask leaves the last vCPU out: a multicast to all
    // but self goes out as one APIC shorthand instead). pv.idle keeps the VM up after the
    // load's report.
    let ipi_load = "pv.idle=1 -- /bin/pv-load ipi-mask 3";
    // (name, --cpus, --memory, guest command-line words)
    let mem = "size=512M";
    let cases: [(&str, &str, &str, &str); 9] = [
        ("default4", "boot=4", mem, ipi_load),
        ("hyperv4", "boot=4,kvm_hyperv=on", mem, ipi_load),
        // Also guest RAM without transparent huge pages.
        ("off", "boot=2,kvm_pv=off", "size=512M,thp=off", "-"),
        ("shared_idle", "boot=2", mem, "pv.idle=3"),
        ("dedicated", "boot=2,dedicated=on", mem, "pv.idle=3"),
        ("one", "boot=1", mem, "-"),
        ("eight", "boot=8", mem, "-"),
        ("reboot", "boot=2", mem, "pv.reboot"),
        // reboot=t: the guest reboots by triple fault, which pv-vmm treats as fatal.
        ("triple", "boot=1", mem, "pv.reboot reboot=t"),
    ];
    let mut args: Vec<String> = vec![
        "sh".into(),
        script.display().to_string(),
        vmm.display().to_string(),
        assets.kernel.display().to_string(),
        assets.initramfs.display().to_string(),
        "90".into(),
    ];
    for (name, cpus, memory, extra) in cases {
        args.extend([name, cpus, memory, extra].map(str::to_owned));
    }
    let out = ok(LabCommand::new(args)
        .file(&vmm)
        .file(&assets.kernel)
        .file(&assets.initramfs)
        .file(&script)
        .file(script.with_file_name("common.sh"))
        .timeout(Duration::from_secs(600))
        .run());
    // Cases run again after the lab lost their guest (a triple fault, a stall): loud.
    report_case_retries(&out.stdout);
    let results = parse_cases(&out.stdout);
    integration_tests::peer::assert_guest_logs_clean(&results);
    let find = |name: &str| -> &CaseResult {
        results
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("case {name} missing:\n{}\n{}", out.stdout, out.stderr))
    };
    for (name, cpus, _, _) in cases {
        let c = find(name);
        println!(
            "case {name} (--cpus {cpus}): {:.2} s, exit {}, boots {}, kvm-guest: {:?}, idle halt_exits {:?}",
            c.boot_s.unwrap_or(f64::NAN),
            c.stat("vmm_exit"),
            c.stat("guest_boots"),
            c.kvm_guest_lines(),
            c.stats.get("idle_halt_exits"),
        );
        assert_eq!(
            c.end,
            Some(Ok(())),
            "case {name} did not finish\n{}",
            dump(c)
        );
    }
    if let Some(t) = out.timing {
        println!(
            "lab: L1 boot {:.2} s, full cycle {:.2} s",
            t.l1_boot_s.unwrap_or(f64::NAN),
            t.total_s
        );
    }

    // Every ordinary case powers off cleanly: status 0.
    for name in [
        "default4",
        "hyperv4",
        "off",
        "shared_idle",
        "dedicated",
        "one",
        "eight",
    ] {
        let c = find(name);
        assert_eq!(
            c.stats.get("vmm_exit"),
            Some(&0),
            "case {name}\n{}",
            dump(c)
        );
        assert_eq!(c.stat("guest_boots"), 1, "case {name}\n{}", dump(c));
        // pv-vmm advertises the in-kernel LAPIC's TSC-deadline mode (KVM 6.1 leaves it out
        // of the supported CPUID): the guest's raw CPUID has CPUID.1:ECX bit 24.
        let ecx = c
            .guest_marker("CPUID-1 ")
            .and_then(|m| m.strip_prefix("ecx=0x"))
            .and_then(|m| m.split(' ').next())
            .and_then(|hex| u32::from_str_radix(hex, 16).ok());
        assert!(
            ecx.is_some_and(|ecx| ecx & (1 << 24) != 0),
            "case {name}: CPUID.1:ECX {ecx:x?} lacks the TSC-deadline bit\n{}",
            dump(c)
        );
        // With it Linux ticks with lapic-deadline and needs no broadcast device, so it
        // sends no timer-broadcast IPIs. Checked on a host with hardware virtualization
        // only: the lab boots its guests with lapic=notscdeadline (TSC-deadline guests made
        // L1 panic, scripts/lab/README.md), and without kvmclock (kvm_pv=off) Linux does
        // not know the TSC's frequency in the lab either.
        let timer = c.guest_marker("GUEST-TIMER ");
        if out.mode == LabMode::Direct && name != "off" {
            assert_eq!(
                timer,
                Some("lapic-deadline broadcast=<NULL>"),
                "case {name}: the guest's tick devices\n{}",
                dump(c)
            );
        } else {
            println!("case {name}: the guest's tick devices: {timer:?} (not checked here)");
        }
    }
    for (name, n) in [
        ("default4", 4),
        ("hyperv4", 4),
        ("one", 1),
        ("eight", 8),
        ("dedicated", 2),
    ] {
        let c = find(name);
        assert_eq!(
            c.guest_marker("GUEST-CPUS "),
            Some(n.to_string().as_str()),
            "case {name}\n{}",
            dump(c)
        );
    }

    // Defaults: all four PV lines, and the guest's CPUID is what pv-vmm says it advertises.
    let d = find("default4");
    assert_eq!(d.pv_lines_present(), PV_GUEST_LINES.to_vec(), "{}", dump(d));
    let (base, features, hints) = guest_cpuid(d).expect("KVM leaves in the default guest");
    let logged = KvmFeatures::parse_list(&vmm_logged(d, "features [")).expect("names");
    assert_eq!(base, 0x4000_0000);
    assert_eq!(
        features, logged,
        "guest CPUID {features:?} vs pv-vmm {logged:?}"
    );
    assert!(hints.is_empty());
    println!(
        "default guest: KVM features {:#x} [{features}]",
        features.bits()
    );

    assert_eq!(
        guest_block0(d).2,
        "KVMKVMKVM...",
        "without Hyper-V the first block is KVM's"
    );

    // kvm_hyperv=on: the Hyper-V block at 0x40000000 as KVM reports it, the KVM leaves at
    // 0x40000100 with the same features, the same four PV lines, and the guest still
    // identifies KVM (Linux takes the hypervisor found at the higher base).
    let hv = find("hyperv4");
    let (hv_max, hv_interface, hv_vendor) = guest_block0(hv);
    println!(
        "hyperv guest: block 0x40000000 vendor \"{hv_vendor}\", interface {hv_interface}, highest leaf {hv_max:#x}"
    );
    assert_eq!(hv_vendor, "Linux KVM Hv", "{}", dump(hv));
    assert_eq!(hv_interface, "Hv#1", "{}", dump(hv));
    assert!(
        (0x4000_0005..0x4000_0100).contains(&hv_max),
        "the Hyper-V block must end below the KVM block: {hv_max:#x}"
    );
    let (hv_base, hv_features, hv_hints) = guest_cpuid(hv).expect("KVM leaves beside Hyper-V");
    println!(
        "hyperv guest: KVM leaves at {hv_base:#x}, features {:#x} [{hv_features}]",
        hv_features.bits()
    );
    assert_eq!(hv_base, 0x4000_0100, "{}", dump(hv));
    assert_eq!(
        hv_features, features,
        "the same features as without Hyper-V"
    );
    assert_eq!(hv_hints, hints);
    assert_eq!(
        KvmFeatures::parse_list(&vmm_logged(hv, "features [")).expect("names"),
        hv_features
    );
    assert_eq!(
        hv.pv_lines_present(),
        PV_GUEST_LINES.to_vec(),
        "{}",
        dump(hv)
    );
    assert_eq!(hv.pv_lines_present(), d.pv_lines_present());
    assert!(
        hv.guest_log
            .iter()
            .any(|l| l.contains("Hypervisor detected: KVM")),
        "{}",
        dump(hv)
    );
    assert!(
        hv.vmm_log
            .iter()
            .any(|l| l.contains("Hyper-V leaves at 0x40000000")),
        "{}",
        dump(hv)
    );

    // Under the multicast-IPI load the VM's hypercalls counter grows by about one per
    // operation (one SEND_IPI hypercall reaches all three other vCPUs), with and without
    // Hyper-V.
    for c in [d, hv] {
        let ops = load_ops(c);
        let hypercalls = c.stats.get("load_hypercalls").copied().unwrap_or_else(|| {
            panic!(
                "case {}: the VM's hypercalls were not sampled around the load\n{}",
                c.name,
                dump(c)
            )
        });
        let exits = c.stat("load_exits");
        println!(
            "case {} under pv-load ipi-mask: {ops} ops, hypercalls +{hypercalls} ({:.2}/op), exits +{exits} ({:.1}/op)",
            c.name,
            hypercalls as f64 / ops.max(1) as f64,
            exits as f64 / ops.max(1) as f64,
        );
        assert!(
            ops > 0,
            "case {}: the load did no work\n{}",
            c.name,
            dump(c)
        );
        assert!(
            hypercalls * 2 >= ops,
            "case {}: {hypercalls} hypercalls for {ops} multicast IPIs: PV send-IPI is not used\n{}",
            c.name,
            dump(c)
        );
    }

    // kvm_pv=off: no KVM leaves, none of the lines.
    let off = find("off");
    assert!(off.pv_lines_present().is_empty(), "{}", dump(off));
    assert_eq!(guest_cpuid(off), None, "{}", dump(off));

    // memory.thp: KVM maps guest RAM with 2 MiB pages by default (where the host has
    // transparent huge pages at all), and with 4 KiB pages only under thp=off, even where
    // the host's mode is `always`.
    let thp_mode = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("@@THP ")?.strip_suffix("@@"))
        .unwrap_or("none");
    let pages = |c: &CaseResult| {
        (
            c.stats.get("up_pages_4k").copied(),
            c.stats.get("up_pages_2m").copied(),
        )
    };
    println!(
        "KVM guest-RAM mappings when up (4 KiB, 2 MiB), host THP \"{thp_mode}\": default4 {:?}, off (thp=off) {:?}",
        pages(find("default4")),
        pages(off)
    );
    let (off_4k, off_2m) = pages(off);
    assert_eq!(off_2m, Some(0), "thp=off\n{}", dump(off));
    assert!(off_4k.is_some_and(|n| n > 0), "thp=off\n{}", dump(off));
    if thp_mode.contains("[always]") || thp_mode.contains("[madvise]") {
        for name in ["default4", "one", "eight"] {
            let c = find(name);
            assert!(
                pages(c).1.is_some_and(|n| n > 0),
                "case {name}: no 2 MiB mapping with thp on (host THP {thp_mode})\n{}",
                dump(c)
            );
        }
    }

    // dedicated=on: the realtime hint, no TLB-flush or sched-yield line, PV spinlocks off;
    // and none of the three is offered, since the guest turns them off under the hint.
    let ded = find("dedicated");
    let (_, ded_features, ded_hints) = guest_cpuid(ded).expect("KVM leaves");
    assert_eq!(ded_hints, KvmHints::REALTIME, "{}", dump(ded));
    assert!(
        !ded_features.intersects(
            KvmFeatures::PV_UNHALT | KvmFeatures::PV_TLB_FLUSH | KvmFeatures::PV_SCHED_YIELD
        ),
        "{}",
        dump(ded)
    );
    let lines = ded.kvm_guest_lines();
    assert!(
        !lines.contains(&"KVM setup pv remote TLB flush"),
        "{}",
        dump(ded)
    );
    assert!(!lines.contains(&"setup PV sched yield"), "{}", dump(ded));
    let spin = lines
        .iter()
        .find(|l| l.starts_with("PV spinlocks disabled"))
        .unwrap_or_else(|| panic!("no 'PV spinlocks disabled' line\n{}", dump(ded)));
    println!(
        "dedicated guest: KVM features {:#x}, hints {:#x}; '{spin}'",
        ded_features.bits(),
        ded_hints.bits()
    );

    // HLT exits: disabled by the preset where the host allows it, so an idle guest's VM
    // counts none, while the shared guest's idle VM counts some.
    let exits = vmm_logged(ded, "disabled exits [");
    let shared_idle = find("shared_idle").stats.get("idle_halt_exits").copied();
    let ded_idle = ded.stats.get("idle_halt_exits").copied();
    println!("idle window: halt_exits shared {shared_idle:?}, dedicated {ded_idle:?} (disabled exits [{exits}])");
    assert!(
        shared_idle.is_some_and(|n| n > 0),
        "the shared idle guest made no HLT exits\n{}",
        dump(find("shared_idle"))
    );
    if exits.split(',').any(|e| e == "hlt") {
        assert_eq!(
            ded_idle,
            Some(0),
            "HLT exits disabled, yet the idle VM counted some\n{}",
            dump(ded)
        );
    } else {
        println!("this host does not allow disabling HLT exits: the dedicated halt_exits check does not apply");
    }

    // A rebooting guest comes back in the same process; SIGTERM then ends pv-vmm cleanly.
    let r = find("reboot");
    assert!(r.stat("guest_boots") >= 2, "{}", dump(r));
    assert_eq!(r.stats.get("vmm_exit"), Some(&(128 + 15)), "{}", dump(r));
    assert!(
        r.vmm_log.iter().any(|l| l.contains("recreating the VM")),
        "{}",
        dump(r)
    );

    // A triple fault ends pv-vmm with status 1 and one line naming it, with where the
    // vCPU stopped (Intel), or that KVM already re-initialized it (AMD, as in the lab).
    let t = find("triple");
    assert_eq!(t.stats.get("vmm_exit"), Some(&1), "{}", dump(t));
    let last = t.vmm_log.last().map(String::as_str).unwrap_or_default();
    assert!(
        last.starts_with("pv-vmm: error: ")
            && last.contains("triple-faulted")
            && ((last.contains(" rip 0x") && last.contains(" cr3 0x"))
                || last.contains("KVM on AMD resets it"))
            && !last.contains("unavailable"),
        "{}",
        dump(t)
    );
}
