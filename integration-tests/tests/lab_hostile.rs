//! Issue 8, case 7: hostile guests through the same vCPU loop `pv-vmm` runs, in the KVM lab
//! (or directly on a bare-metal runner), driven by
//! `integration-tests/lab-cases/hostile-cases.sh`.
//!
//! Raw PVH guests (no Linux, `integration-tests/guest/hostile/`) boot under pv-vmm with the
//! API on. The hostile one issues every hypercall number 0..64 and the KVM hypercalls with
//! extreme arguments, in 32-bit and 64-bit mode; writes MSR_KVM_STEAL_TIME with
//! misaligned, reserved-bit, out-of-memory and huge values; sweeps unclaimed I/O ports and
//! MMIO; then halts with the last steal-time value pointing outside its memory. It runs
//! with the default PV features and with `kvm_pv=off`. The idle guest only reports and
//! halts. For each, the test asserts:
//!
//! - pv-vmm keeps running (vmm.ping answers, the process is alive), vm.counters answers 200
//!   with a per-vCPU steal-time error for the bad record, and vmm.shutdown ends it with 0;
//! - no vCPU thread spins while its vCPU halts or waits for INIT/SIPI, also after the guest
//!   PV-kicked the vCPU that never started (case `hostile_kick_ap`: KVM's KVM_RUN then
//!   returns EAGAIN at once for good, and pv-vmm backs off);
//! - every hypercall got the answer KVM gives (`kvm_answer`: exact where the ABI and the
//!   configuration fix it: -KVM_ENOSYS, -KVM_EINVAL, SEND_IPI's count, 0; a set for
//!   CLOCK_PAIRING, which depends on the host's clock), and KVM counted each one;
//! - steal-time writes with reserved bits (5:1) got #GP and changed nothing; every other
//!   value (disabled, valid, MMIO hole, past RAM, 1 TiB, bit 63, beyond any address
//!   width) was accepted and reads back; with `kvm_pv=off` every access got #GP;
//! - unclaimed ports and unbacked MMIO were absorbed (reads give all ones);
//! - the exits pv-vmm counted are what the guest did: every port and MMIO access it made
//!   one at a time, no hypercall exit, no MSR exit, nothing else, and nothing more while
//!   it halts; the PVH start info it found is what pv-vmm meant to pass.

use std::time::Duration;

use integration_tests::features::vcpus;
use integration_tests::hostile::{
    kvm_answer, parse_guest, Answer, GuestReport, HostileGuests, MsrAccess,
};
use integration_tests::peer::{parse_cases, CaseResult};
use integration_tests::{ok, repo_root, vmm_binaries, LabCommand};
use pv_features::cpuid::KvmFeatures;
use pv_features::steal_time::STEAL_TIME_RESERVED_MASK;
use serde_json::Value;

/// The PVH module (`--initramfs`) every case gets; the guests print its first 8 bytes.
const MODULE: &[u8] = b"HOSTILE-MODULE-BYTES";
/// Guest RAM (`--memory size=256M` in the case script).
const MEMORY: u64 = 256 << 20;
/// Where pv-vmm puts the ACPI RSDP.
const RSDP: u64 = 0xe0000;
/// The hostile guest's string I/O: 16 bytes out and 8 words in to an absent port, 4 bytes
/// in from the CMOS and a 41-byte line out to COM1, one instruction each. KVM decides how
/// many exits they take (at least one each).
const STRING_IO_MAX_EXITS: u64 = 16 + 8 + 4 + 41;
/// The string instructions among them.
const STRING_IO_OPS: u64 = 4;
/// CPU ticks (1/100 s) a vCPU thread may take in the script's 2-second window while its
/// vCPU halts or waits for INIT/SIPI: 10% of a CPU. A spinning thread takes about 200.
const MAX_IDLE_TICKS: u64 = 20;

fn dump(c: &CaseResult) -> String {
    let api: Vec<String> = c
        .api
        .iter()
        .map(|(step, (rc, text))| {
            format!(
                "{step}: {rc} {}",
                text.chars().take(400).collect::<String>()
            )
        })
        .collect();
    format!(
        "case {} ({}): end {:?}, stats {:?}\napi:\n{}\nguest (last 30 lines):\n{}\npv-vmm:\n{}",
        c.name,
        c.cpu,
        c.end,
        c.stats,
        api.join("\n"),
        c.guest_log[c.guest_log.len().saturating_sub(30)..].join("\n"),
        c.vmm_log.join("\n")
    )
}

fn json(c: &CaseResult, step: &str) -> Value {
    let (rc, text) = c
        .api
        .get(step)
        .unwrap_or_else(|| panic!("no API step {step}\n{}", dump(c)));
    assert_eq!(*rc, 0, "{step} failed: {text}\n{}", dump(c));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{step}: not JSON ({e}): {text}"))
}

/// The effective PV features and enforcement pv-vmm reports in vm.info.
fn effective(c: &CaseResult) -> (KvmFeatures, bool) {
    let info = json(c, "info");
    let names: Vec<&str> = info["pv"]["effective"]["features"]
        .as_array()
        .unwrap_or_else(|| panic!("no effective features: {info}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let features = KvmFeatures::parse_list(&names.join(","))
        .unwrap_or_else(|e| panic!("effective features {names:?}: {e}"));
    let enforce = info["pv"]["effective"]["enforce_pv_cpuid"] == true;
    (features, enforce)
}

fn exits(v: &Value) -> [u64; 5] {
    ["io", "mmio", "hypercall", "msr", "other"].map(|k| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("vmm_exits.{k} missing in {v}"))
    })
}

/// What every case shares: pv-vmm survived, answered and shut down cleanly, and the guest
/// found in hvm_start_info what pv-vmm meant to pass.
fn check_vmm_and_start_info(c: &CaseResult, g: &GuestReport) {
    assert_eq!(c.end, Some(Ok(())), "{}", dump(c));
    assert_eq!(c.stats.get("alive"), Some(&1), "{}", dump(c));
    assert_eq!(c.stats.get("vmm_exit"), Some(&0), "{}", dump(c));
    assert!(json(c, "ping")["version"].is_string(), "{}", dump(c));
    assert!(
        g.malformed.is_empty(),
        "unparsed guest lines {:?}",
        g.malformed
    );
    assert_eq!(g.unexpected_fault, None, "{}", dump(c));

    let info = &g.start_info;
    assert_eq!(info.get("magic"), Some(&0x336e_c578), "{info:?}");
    assert_eq!(info.get("version"), Some(&1));
    assert_eq!(info.get("flags"), Some(&0));
    assert_eq!(info.get("modules"), Some(&1));
    assert_eq!(info.get("rsdp"), Some(&RSDP));
    assert_eq!(info.get("memmap_entries"), Some(&2));
    assert_eq!(
        g.memmap,
        vec![(0, 0x9fc00, 1), (0x10_0000, MEMORY - 0x10_0000, 1)],
        "the E820 map of {MEMORY} bytes"
    );
    assert_eq!(g.ram_end, Some(MEMORY));
    assert_eq!(
        g.cmdline.as_deref(),
        Some(format!("pv-hostile case={}", c.name).as_str())
    );
    let module = g.module.unwrap_or_else(|| panic!("no module\n{}", dump(c)));
    assert_eq!(module.size, MODULE.len() as u64);
    assert_eq!(&module.first, &MODULE[..8]);
    assert_eq!(module.paddr % 4096, 0);
    assert!(module.paddr >= 0x10_0000 && module.paddr + module.size <= MEMORY);

    // The guest halts: nothing more reaches pv-vmm between the two vm.counters.
    let (c1, c2) = (json(c, "counters1"), json(c, "counters2"));
    assert_eq!(
        exits(&c1["vmm_exits"]),
        exits(&c2["vmm_exits"]),
        "exits reached pv-vmm while the guest halted"
    );

    // No vCPU thread spins while the guest halts (or never started): at most 10% of a CPU
    // over the 2 s the script measured (USER_HZ = 100 ticks a second).
    for id in 0..vcpus(&c1).len() {
        let ticks = c
            .stats
            .get(&format!("cpu_ticks_vcpu{id}"))
            .copied()
            .unwrap_or_else(|| panic!("no CPU time of vcpu{id}\n{}", dump(c)));
        println!("[{}] vcpu{id} thread: {ticks} ticks of CPU in 2 s", c.name);
        assert!(
            ticks <= MAX_IDLE_TICKS,
            "vcpu{id} spins: {ticks} ticks in 2 s\n{}",
            dump(c)
        );
    }
}

/// The hostile guest's run: hypercalls, MSRs, ports, MMIO and the exits pv-vmm counted.
fn check_hostile(c: &CaseResult) {
    let g = parse_guest(&c.guest_log);
    check_vmm_and_start_info(c, &g);
    let done = g
        .done
        .clone()
        .unwrap_or_else(|| panic!("the guest did not finish\n{}", dump(c)));
    assert!(g.long_mode, "{}", dump(c));
    let (features, enforce) = effective(c);
    let steal_time = features.contains(KvmFeatures::STEAL_TIME);
    let (vendor, insn) = g.vendor.clone().unwrap_or_default();
    println!(
        "[{}] guest: {vendor} ({insn}); PV features {:#x} [{features}], enforcement {enforce}; done in {:?} cs",
        c.name,
        features.bits(),
        c.stats.get("guest_done_cs")
    );

    // What the guest saw in CPUID is what pv-vmm says it advertises.
    if features.is_empty() {
        assert_ne!(
            g.kvm_cpuid.get("signature").map(String::as_str),
            Some("KVMKVMKVM"),
            "kvm_pv=off still shows the KVM signature: {:?}",
            g.kvm_cpuid
        );
    } else {
        assert_eq!(
            g.kvm_cpuid.get("signature").map(String::as_str),
            Some("KVMKVMKVM")
        );
        assert_eq!(
            g.kvm_cpuid.get("features").map(String::as_str),
            Some(format!("{:08x}", features.bits()).as_str())
        );
    }

    // Hypercalls: KVM's answers, computed from the ABI and the configuration. Only the
    // guest's own APIC (0) is software-enabled: the second vCPU never started.
    let mut exact = 0;
    let mut loose: Vec<String> = Vec::new();
    let mut wrong: Vec<String> = Vec::new();
    for h in &g.hypercalls {
        let answer = kvm_answer(&h.call, features, enforce, 0);
        if !answer.accepts(h.ret) {
            wrong.push(format!(
                "{h:x?}: KVM answered {:#x}, expected {answer:x?}",
                h.ret
            ));
        }
        match answer {
            Answer::Exact(_) => exact += 1,
            Answer::OneOf { why, .. } => loose.push(format!(
                "  {}-bit nr {} a0 {:#x} a1 {:#x}: {:#x} ({why})",
                if h.call.long_mode { 64 } else { 32 },
                h.call.nr,
                h.call.args[0],
                h.call.args[1],
                h.ret
            )),
        }
    }
    println!(
        "[{}] {} hypercalls: {exact} with an exact answer, {} host-dependent:\n{}",
        c.name,
        g.hypercalls.len(),
        loose.len(),
        loose.join("\n")
    );
    assert!(
        wrong.is_empty(),
        "answers KVM should not give:\n{}",
        wrong.join("\n")
    );
    assert_eq!(g.hypercalls.len() as u64, done.count("hypercalls"));
    for long_mode in [false, true] {
        for nr in 0..=64u64 {
            let swept = g
                .hypercalls
                .iter()
                .filter(|h| h.call.long_mode == long_mode && h.call.nr == nr)
                .count();
            assert!(swept >= 2, "nr {nr} long_mode {long_mode}: {swept} calls");
        }
    }

    // Steal-time MSR: #GP exactly for reserved bits (5:1), the rest accepted as written.
    let mut current = 0u64;
    let mut faults = 0u64;
    for m in &g.msrs {
        let reserved = m.value & STEAL_TIME_RESERVED_MASK != 0;
        if steal_time {
            assert_eq!(m.gp_write, reserved, "write {:#x}: {m:x?}", m.value);
            assert!(!m.gp_read, "{m:x?}");
            if !m.gp_write {
                current = m.value;
            }
            assert_eq!(m.readback, current, "after writing {:#x}", m.value);
        } else {
            assert!(m.gp_write && m.gp_read, "kvm_pv=off: {m:x?}");
            assert_eq!(m.readback, 0);
        }
        faults += u64::from(m.gp_write) + u64::from(m.gp_read);
    }
    let (refused, accepted): (Vec<&MsrAccess>, Vec<&MsrAccess>) =
        g.msrs.iter().partition(|m| m.gp_write);
    println!(
        "[{}] MSR_KVM_STEAL_TIME: #GP for {:x?}; accepted {:x?}",
        c.name,
        refused.iter().map(|m| m.value).collect::<Vec<_>>(),
        accepted.iter().map(|m| m.value).collect::<Vec<_>>()
    );
    assert!(g.msrs.len() >= 14, "{:?}", g.msrs);
    assert_eq!(
        faults,
        done.count("faults"),
        "every fault the guest took was an MSR one"
    );
    if steal_time {
        let record = g
            .record
            .unwrap_or_else(|| panic!("no record line\n{}", dump(c)));
        assert!(record.version > 0 && record.version % 2 == 0, "{record:?}");
        let last = g.msrs.last().map(|m| m.readback).unwrap_or_default();
        assert_eq!(last, (MEMORY + 0x1000) | 1, "the guest ends past its RAM");
    }

    // Ports and MMIO: absorbed, reads all ones.
    assert_eq!(g.ports.get("not_ones"), Some(&0), "{:?}", g.ports);
    assert_eq!(
        g.ports.get("wide_string_not_ones"),
        Some(&0),
        "{:?}",
        g.ports
    );
    // String I/O to devices that are there: every element reaches them. `rep insb` of 4
    // from CMOS status register D reads 0x80 four times; `rep outsb` of a whole line to
    // COM1 arrives whole on the console.
    assert_eq!(
        g.ports.get("cmos_string"),
        Some(&0x8080_8080),
        "{:?}",
        g.ports
    );
    assert_eq!(
        g.string_out.as_deref(),
        Some("one rep outsb, every byte"),
        "{}",
        dump(c)
    );
    assert!(
        g.ports.get("swept").is_some_and(|n| *n > 1500),
        "{:?}",
        g.ports
    );
    assert_eq!(g.mmio.get("not_ones"), Some(&0), "{:?}", g.mmio);
    assert_eq!(g.mmio64.get("not_ones"), Some(&0), "{:?}", g.mmio64);

    // vm.counters: 200, both vCPUs; vm.info reports the bad record per vCPU.
    let counters = json(c, "counters1");
    assert_eq!(vcpus(&counters).len(), 2, "{counters}");
    let info = json(c, "info");
    let steal = info["steal_time"].as_array().expect("vm.info steal_time");
    assert_eq!(steal.len(), 2, "{info}");
    let st = &steal[0];
    if steal_time {
        assert_eq!(st["state"], "invalid", "{st}");
        assert_eq!(st["msr"].as_u64(), Some((MEMORY + 0x1000) | 1), "{st}");
        assert!(
            st["error"]
                .as_str()
                .is_some_and(|e| e.contains("not inside guest memory")),
            "{st}"
        );
    } else {
        // The VM does not offer steal time: pv-vmm says so without asking KVM (which would
        // refuse the MSR read under PV CPUID enforcement).
        assert_eq!(st["state"], "not_advertised", "{st}");
    }
    assert_eq!(
        steal[1]["state"],
        if steal_time {
            "disabled"
        } else {
            "not_advertised"
        }
    );
    // No record: the numbers say so too.
    assert_eq!(counters["kvm_vcpu0"]["steal_time_enabled"], 0, "{counters}");
    println!("[{}] vCPU 0 steal time in vm.info: {st}", c.name);

    // The exits pv-vmm saw are the guest's: its single port accesses plus its string
    // I/O, its MMIO, and nothing else (KVM served every hypercall and MSR access).
    let [io, mmio, hypercall, msr, other] = exits(&counters["vmm_exits_vcpu0"]);
    let single = done.single_io();
    println!(
        "[{}] exits that reached pv-vmm (vCPU 0): io {io} (guest: {single} single + string I/O {}), mmio {mmio}, hypercall {hypercall}, msr {msr}, other {other}",
        c.name,
        io.saturating_sub(single)
    );
    assert!(
        io >= single + STRING_IO_OPS && io <= single + STRING_IO_MAX_EXITS,
        "io exits {io}, the guest made {single} single accesses and {STRING_IO_OPS} string \
         instructions"
    );
    assert_eq!(mmio, done.count("mmio"));
    assert_eq!([hypercall, msr, other], [0, 0, 0]);
    assert_eq!(
        exits(&counters["vmm_exits_vcpu1"]),
        [0; 5],
        "the second vCPU never ran"
    );
    assert_eq!(exits(&counters["vmm_exits"]), [io, mmio, 0, 0, 0]);
    match counters["kvm_vcpu0"]["hypercalls"].as_u64() {
        Some(n) => assert_eq!(n, done.count("hypercalls"), "KVM's hypercalls statistic"),
        None => println!(
            "[{}] no binary statistics on this host: KVM's hypercall count not checked",
            c.name
        ),
    }
    assert_eq!(
        c.stats.get("host_warnings"),
        Some(&0),
        "the host kernel warned\n{}",
        dump(c)
    );

    // With kick_ap, the last hypercall PV-kicked the vCPU that never started: KVM then
    // returns EAGAIN from its KVM_RUN at once, every time, and pv-vmm backs off instead of
    // spinning (checked with the CPU ticks above).
    assert_eq!(g.kicked_ap, c.name.contains("kick_ap"), "{}", dump(c));
    if g.kicked_ap {
        let kick = g.hypercalls.last().expect("the kick");
        assert_eq!(
            (kick.call.nr, kick.call.args[1], kick.ret),
            (5, 1, 0),
            "{kick:x?}"
        );
        assert!(
            c.vmm_log
                .iter()
                .any(|l| l.contains("keeps returning EAGAIN")),
            "the kicked vCPU never made KVM_RUN return EAGAIN in a row\n{}",
            dump(c)
        );
    }
}

fn check_idle(c: &CaseResult) {
    let g = parse_guest(&c.guest_log);
    check_vmm_and_start_info(c, &g);
    assert!(g.idle_up, "{}", dump(c));
    let counters = json(c, "counters1");
    assert_eq!(vcpus(&counters).len(), 1, "{counters}");
    // Every byte it printed is one port write; nothing else reached pv-vmm.
    let bytes: u64 = c.guest_log.iter().map(|l| l.len() as u64 + 1).sum();
    assert_eq!(exits(&counters["vmm_exits_vcpu0"]), [bytes, 0, 0, 0, 0]);
    assert_eq!(json(c, "info")["steal_time"][0]["state"], "disabled");
    println!(
        "[{}] idle guest: {bytes} bytes out, halted; vm.counters answers",
        c.name
    );
}

#[test]
fn lab_hostile_guests_cannot_hurt_pv_vmm() {
    let guests = ok(HostileGuests::build());
    let (vmm, remote) = vmm_binaries();
    let module = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("hostile-module.bin");
    std::fs::write(&module, MODULE).expect("writing the module file");
    let script = repo_root().join("integration-tests/lab-cases/hostile-cases.sh");
    let path = |p: &std::path::Path| p.display().to_string();
    let out = ok(LabCommand::new([
        "sh".to_owned(),
        path(&script),
        path(&vmm),
        path(&remote),
        path(&module),
        "hostile".to_owned(),
        "boot=2".to_owned(),
        path(&guests.hostile),
        "hostile_pv_off".to_owned(),
        "boot=2,kvm_pv=off".to_owned(),
        path(&guests.hostile),
        "hostile_kick_ap".to_owned(),
        "boot=2".to_owned(),
        path(&guests.hostile),
        "idle".to_owned(),
        "boot=1".to_owned(),
        path(&guests.idle),
    ])
    .file(&vmm)
    .file(&remote)
    .file(&module)
    .file(&script)
    .file(&guests.hostile)
    .file(&guests.idle)
    .timeout(Duration::from_secs(900))
    .run());
    if let Some(host) = out.stdout.lines().find_map(|l| l.strip_prefix("@@HOST ")) {
        println!("ran on: {} ({:?})", host.trim_end_matches("@@"), out.mode);
    }
    if let Some(t) = &out.timing {
        println!(
            "lab: L1 boot {:?} s, command {:?} s, total {:.1} s",
            t.l1_boot_s, t.command_s, t.total_s
        );
    }
    let cases = parse_cases(&out.stdout);
    let find = |name: &str| {
        cases
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no case {name}\n{}\n{}", out.stdout, out.stderr))
    };
    check_hostile(find("hostile"));
    check_hostile(find("hostile_pv_off"));
    check_hostile(find("hostile_kick_ap"));
    check_idle(find("idle"));
    assert_eq!(out.status, 0, "the case script failed\n{}", out.stderr);
}
