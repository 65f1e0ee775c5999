//! pv-vmm's REST API against a running guest in the KVM lab (or directly on a bare-metal
//! runner), driven by pv-remote through `integration-tests/lab-cases/api-cases.sh`:
//! the VM is created and booted through the API (4 vCPUs); `pv --halt-poll-ns 0` applies
//! at once (vm.info and the vCPUs' halt-poll statistics show it); `pv --dedicated on` is
//! pending until `reboot`, after which the guest's CPUID carries the realtime hint and it
//! no longer sets up PV TLB flush; bad input gets 4xx while the guest keeps running; a
//! load of 8 clients x N requests (vm.info, vm.counters, vm.pv halt-poll changes) fails
//! none, and the guest still answers on its console; pause and resume work; vmm.shutdown
//! ends pv-vmm with status 0 and removes the socket.
//!
//! `PV_API_LOAD_REQUESTS` sets N (default 1000).

use std::collections::BTreeMap;
use std::time::Duration;

use integration_tests::features::{vcpu_steal_enabled, vcpu_sum, vcpus};
use integration_tests::{ok, repo_root, report_retry, vmm_binaries, GuestAssets, LabCommand};

/// What the case script printed.
#[derive(Debug, Default)]
struct Run {
    /// Step name to (pv-remote's exit status, its answer).
    api: BTreeMap<String, (i32, String)>,
    marks: Vec<String>,
    guest: Vec<String>,
    vmm: Vec<String>,
    /// The script's `@@LAB-FAULT` line: the run failed and the lab took its guest away, as
    /// `lab_fault_in` in lab-cases/common.sh (the one place that decides) tells it.
    lab_fault: Option<String>,
    end: Option<String>,
}

impl Run {
    fn parse(stdout: &str) -> Self {
        let mut run = Run::default();
        for line in stdout.lines().map(|l| l.trim_end_matches('\r')) {
            if let Some(rest) = line
                .strip_prefix("@@API ")
                .and_then(|l| l.strip_suffix("@@"))
            {
                let mut words = rest.splitn(3, ' ');
                let step = words.next().unwrap_or_default().to_owned();
                let rc = words.next().and_then(|w| w.parse().ok()).unwrap_or(-1);
                let text = words.next().unwrap_or_default().to_owned();
                run.api.insert(step, (rc, text));
            } else if let Some(m) = line
                .strip_prefix("@@MARK ")
                .and_then(|l| l.strip_suffix("@@"))
            {
                run.marks.push(m.to_owned());
            } else if let Some(g) = line.strip_prefix("L2| ") {
                run.guest.push(g.to_owned());
            } else if let Some(v) = line.strip_prefix("VMM| ") {
                run.vmm.push(v.to_owned());
            } else if let Some(f) = line
                .strip_prefix("@@LAB-FAULT ")
                .and_then(|l| l.strip_suffix("@@"))
            {
                run.lab_fault = Some(f.to_owned());
            } else if let Some(e) = line
                .strip_prefix("@@END ")
                .and_then(|l| l.strip_suffix("@@"))
            {
                run.end = Some(e.to_owned());
            }
        }
        run
    }

    fn dump(&self) -> String {
        format!(
            "marks: {:?}\nguest:\n{}\npv-vmm:\n{}",
            self.marks,
            self.guest.join("\n"),
            self.vmm.join("\n")
        )
    }

    /// The JSON answer of a step that succeeded.
    fn json(&self, step: &str) -> serde_json::Value {
        let (rc, text) = self
            .api
            .get(step)
            .unwrap_or_else(|| panic!("no step {step}\n{}", self.dump()));
        assert_eq!(*rc, 0, "step {step} failed: {text}\n{}", self.dump());
        serde_json::from_str(text).unwrap_or_else(|e| panic!("step {step}: {e}: {text}"))
    }

    /// The error text of a step that failed.
    fn error(&self, step: &str) -> &str {
        let (rc, text) = self
            .api
            .get(step)
            .unwrap_or_else(|| panic!("no step {step}\n{}", self.dump()));
        assert_ne!(*rc, 0, "step {step} succeeded: {text}");
        text
    }

    /// Why this run failed because the lab took its guest away (a triple fault, a reset or
    /// an RCU stall, as the script's `@@LAB-FAULT` line says; the lab faults L2 guests of
    /// both VMMs), if it did and the run did not end ok. Says how many boots the guest had
    /// come up from.
    fn lab_fault(&self) -> Option<String> {
        if self.end.as_deref() == Some("ok") {
            return None;
        }
        let fault = self.lab_fault.as_deref()?;
        let booted = ["boot", "reboot"]
            .iter()
            .filter(|step| self.api.get(**step).is_some_and(|(rc, _)| *rc == 0))
            .count();
        let up = self
            .guest
            .iter()
            .filter(|l| l.contains("@@GUEST-UP"))
            .count();
        Some(format!("{booted} boot(s), {up} up: {fault}"))
    }

    /// The guest's console lines of boot `n` (0-based), split at `@@GUEST-UP`.
    fn boot(&self, n: usize) -> Vec<&str> {
        let mut boots: Vec<Vec<&str>> = Vec::new();
        for line in &self.guest {
            if line.contains("@@GUEST-UP") {
                boots.push(Vec::new());
            }
            if let Some(b) = boots.last_mut() {
                b.push(line);
            }
        }
        boots.get(n).cloned().unwrap_or_default()
    }
}

fn hints_of(boot: &[&str]) -> Option<u32> {
    boot.iter().find_map(|l| {
        let rest = l.split_once("@@CPUID-KVM ")?.1;
        let hints = rest.split(' ').find_map(|w| w.strip_prefix("hints="))?;
        u32::from_str_radix(hints.trim_end_matches("@@").trim_start_matches("0x"), 16).ok()
    })
}

#[test]
fn lab_faults_are_told_from_failures() {
    let fault = "@@LAB-FAULT pv-vmm: error: vCPU 0: the guest triple-faulted (KVM_EXIT_SHUTDOWN)@@";
    let first = format!("@@API boot 0 {{}}@@\n{fault}\n@@END fail no shell@@\n");
    let why = Run::parse(&first)
        .lab_fault()
        .expect("a fault before the guest was up");
    assert!(why.starts_with("1 boot(s), 0 up: "), "{why}");
    let up = format!("@@API boot 0 {{}}@@\nL2| @@GUEST-UP 1.2@@\n{fault}\n@@END fail x@@\n");
    let why = Run::parse(&up)
        .lab_fault()
        .expect("a fault once the guest was up");
    assert!(why.starts_with("1 boot(s), 1 up: "), "{why}");
    let second = format!(
        "@@API boot 0 {{}}@@\nL2| @@GUEST-UP 1.2@@\n@@API reboot 0 {{}}@@\n{fault}\n@@END fail@@\n"
    );
    assert!(Run::parse(&second).lab_fault().is_some());
    // A failure without a fault is a result; so is a run that ended ok.
    assert_eq!(
        Run::parse("@@API boot 0 {}@@\n@@END fail load test@@\n").lab_fault(),
        None
    );
    let ok_run = format!("@@API boot 0 {{}}@@\n{fault}\n@@END ok@@\n");
    assert_eq!(Run::parse(&ok_run).lab_fault(), None);
    // pv-vmm's words alone decide nothing here: the script's marker does.
    let unmarked =
        "@@API boot 0 {}@@\nVMM| pv-vmm: error: vCPU 0: the guest triple-faulted\n@@END fail x@@\n";
    assert_eq!(Run::parse(unmarked).lab_fault(), None);
}

#[test]
fn lab_api_drives_a_running_guest() {
    let assets = ok(GuestAssets::prepare());
    let (vmm, remote) = vmm_binaries();
    let script = repo_root().join("integration-tests/lab-cases/api-cases.sh");
    let common = repo_root().join("integration-tests/lab-cases/common.sh");
    let requests = std::env::var("PV_API_LOAD_REQUESTS").unwrap_or_else(|_| "1000".into());
    let command = LabCommand::new([
        "sh".to_owned(),
        script.display().to_string(),
        vmm.display().to_string(),
        remote.display().to_string(),
        assets.kernel.display().to_string(),
        assets.initramfs.display().to_string(),
        requests.clone(),
    ])
    .file(&vmm)
    .file(&remote)
    .file(&assets.kernel)
    .file(&assets.initramfs)
    .file(&script)
    .file(&common)
    .timeout(Duration::from_secs(1200));
    let mut out = ok(command.run());
    let mut run = Run::parse(&out.stdout);
    if let Some(why) = run.lab_fault() {
        report_retry(&format!(
            "RETRIED (the lab took the guest away, the run ran again): lab_api: {why}"
        ));
        out = ok(command.run());
        run = Run::parse(&out.stdout);
    }
    if let Some(t) = &out.timing {
        println!("lab: L1 boot {:?} s, total {:.1} s", t.l1_boot_s, t.total_s);
    }
    integration_tests::peer::assert_guest_logs_clean(&[integration_tests::peer::CaseResult {
        name: "lab_api".into(),
        guest_log: run.guest.clone(),
        ..Default::default()
    }]);
    for (step, (rc, text)) in &run.api {
        let short: String = text.chars().take(300).collect();
        println!("{step}: {rc} {short}");
    }
    assert_eq!(
        run.end.as_deref(),
        Some("ok"),
        "{}\n{}",
        out.stderr,
        run.dump()
    );
    assert!(
        run.marks.iter().any(|m| m == "socket-mode 600"),
        "{:?}",
        run.marks
    );

    // Before the change: steal time is on in every vCPU (the MSR read on the vCPU threads
    // found the record), and halt polling runs.
    let plan = run.json("pv_halt10ms");
    assert_eq!(
        plan["applied_now"],
        serde_json::json!([{"action": "set_halt_poll_ns", "ns": 10_000_000}]),
        "{plan}"
    );
    let c0 = run.json("counters0");
    let c1 = run.json("counters1");
    assert_eq!(vcpu_steal_enabled(&c0), [true; 4], "{c0}");
    assert!(c0["kvm_vm"].is_object(), "{c0}");

    // halt_poll_ns=0 applies now: in the plan, in vm.info, and in the statistics.
    let plan = run.json("pv_halt0");
    assert_eq!(
        plan["applied_now"],
        serde_json::json!([{"action": "set_halt_poll_ns", "ns": 0}]),
        "{plan}"
    );
    assert!(plan["pending"].is_null(), "{plan}");
    let info = run.json("info_halt0");
    assert_eq!(info["state"], "Running");
    assert_eq!(info["pv"]["requested"]["halt_poll_ns"], 0);
    assert_eq!(info["pv"]["effective"]["halt_poll_ns"], 0);
    assert_eq!(info["pv"]["effective_is_live"], true);
    // Without kvm_hyperv the running vCPUs have the KVM leaves at 0x40000000.
    assert_eq!(
        info["cpuid_blocks"],
        serde_json::json!({"hyperv": null, "kvm": "0x40000000"}),
        "{info}"
    );
    assert!(info["hyperv"].is_null(), "{info}");
    let c2 = run.json("counters2");
    let c3 = run.json("counters3");
    let before = vcpu_sum(&c1, "halt_attempted_poll") - vcpu_sum(&c0, "halt_attempted_poll");
    let after = vcpu_sum(&c3, "halt_attempted_poll") - vcpu_sum(&c2, "halt_attempted_poll");
    let halts_after = vcpu_sum(&c3, "halt_exits") - vcpu_sum(&c2, "halt_exits");
    println!(
        "halt_attempted_poll over 3 s: {before} with halt_poll_ns=10000000, {after} with halt_poll_ns=0 ({halts_after} halt exits)"
    );
    assert!(
        before > 0,
        "no halt polling with a 10 ms limit\n{}",
        run.dump()
    );
    assert!(
        after * 10 <= before,
        "halt polling went on after halt_poll_ns=0: {before} -> {after}"
    );

    // dedicated=on is pending until the next reboot.
    let plan = run.json("pv_dedicated");
    assert_eq!(plan["pending"]["dedicated"], true, "{plan}");
    assert_eq!(plan["changes"][0]["timing"], "next_reboot", "{plan}");
    let info = run.json("info_pending");
    assert_eq!(info["pv"]["pending"]["dedicated"], true, "{info}");
    assert_eq!(info["pv"]["requested"]["dedicated"], false, "{info}");
    assert_eq!(
        info["pv"]["effective"]["hints"],
        serde_json::json!([]),
        "{info}"
    );
    assert_eq!(
        info["pv"]["after_reboot_effective"]["hints"],
        serde_json::json!(["realtime"])
    );

    // Bad input while running: 4xx naming the problem.
    let e = run.error("bad_combo");
    assert!(e.contains("400") && e.contains("needs steal_time"), "{e}");
    let e = run.error("bad_state");
    assert!(e.contains("409") && e.contains("vm.resume"), "{e}");

    // Load: none failed, and the guest still answers on its console.
    let load = run.json("load");
    let n: u64 = requests.parse().unwrap_or(1000);
    assert_eq!(load["failed"], 0, "{load}");
    assert_eq!(load["completed"].as_u64(), Some(8 * n), "{load}");
    println!(
        "load: 8 clients x {n} requests in {:.1} s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        load["wall_s"].as_f64().unwrap_or(f64::NAN),
        load["p50_ms"].as_f64().unwrap_or(f64::NAN),
        load["p99_ms"].as_f64().unwrap_or(f64::NAN),
        load["max_ms"].as_f64().unwrap_or(f64::NAN)
    );
    assert!(
        run.marks.iter().any(|m| m == "console-after-load"),
        "{}",
        run.dump()
    );

    // Pause and resume.
    assert_eq!(run.json("info_paused")["state"], "Paused");
    let paused = run.json("counters_paused");
    assert_eq!(vcpus(&paused).len(), 4, "{paused}");
    assert!(
        run.marks.iter().any(|m| m == "console-after-resume"),
        "{}",
        run.dump()
    );

    // After the API reboot: dedicated is in force, the guest sees the realtime hint and
    // does not set up PV TLB flush (it did before).
    let info = run.json("info_rebooted");
    assert_eq!(info["state"], "Running");
    assert_eq!(info["pv"]["requested"]["dedicated"], true, "{info}");
    assert!(info["pv"]["pending"].is_null(), "{info}");
    assert_eq!(
        info["pv"]["effective"]["hints"],
        serde_json::json!(["realtime"])
    );
    let first = run.boot(0);
    let second = run.boot(1);
    assert_eq!(hints_of(&first), Some(0), "{}", run.dump());
    assert_eq!(hints_of(&second), Some(1), "{}", run.dump());
    let tlb = "kvm-guest: KVM setup pv remote TLB flush";
    assert!(first.iter().any(|l| l.contains(tlb)), "{}", run.dump());
    assert!(!second.iter().any(|l| l.contains(tlb)), "{}", run.dump());
    run.json("counters_rebooted");

    assert!(
        run.marks.iter().any(|m| m == "vmm-exit 0"),
        "{:?}",
        run.marks
    );
}
