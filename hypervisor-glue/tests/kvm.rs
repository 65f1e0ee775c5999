//! KVM-backed tests: `--cpus` strings go through validation and the hooks onto real VMs on
//! /dev/kvm, and what KVM holds (vCPU CPUID, MSRs, halt polling) is read back.
//!
//! Every test needs a usable /dev/kvm. None runs guest code, so the software nested KVM of
//! the development machines is enough.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use pv_features::cpuid::{
    CpuidBlocks, KvmFeatures, KvmHints, KvmLeaves, KVM_CPUID_ALT_BASE, KVM_CPUID_BASE,
    KVM_SIGNATURE,
};
use pv_features::exits::ExitsError;
use pv_features::host::HostPv;
use pv_features::msrs::{MsrError, MSR_KVM_ASYNC_PF_INT, MSR_KVM_POLL_CONTROL, MSR_KVM_STEAL_TIME};
use pv_features::setup::{PvVm, SetupError};

use hypervisor_glue::change::{plan_change, ImmediateAction, PvPatch, Timing, VmState};
use hypervisor_glue::cpus::CpusConfig;
use hypervisor_glue::hooks::{self, HookError};
use hypervisor_glue::validate::{CpusError, Validated};

/// What a Cloud Hypervisor shaped VMM says it backs: extended-destination MSI routing.
const VMM_BACKS: KvmFeatures = KvmFeatures::MSI_EXT_DEST_ID;

fn kvm() -> Kvm {
    Kvm::new().expect("/dev/kvm must be usable for this test binary")
}

fn host(kvm: &Kvm) -> HostPv {
    HostPv::probe(kvm).expect("probing the host")
}

fn host_cpus() -> usize {
    std::thread::available_parallelism().map_or(0, usize::from)
}

fn validated(cpus: &str, host: &HostPv) -> (CpusConfig, Validated) {
    let config = CpusConfig::parse(cpus).unwrap_or_else(|e| panic!("{cpus}: {e}"));
    let validated = config
        .validate(host, host_cpus(), VMM_BACKS)
        .unwrap_or_else(|e| panic!("{cpus}: {e}"));
    (config, validated)
}

/// A KVM VM set up the way the hooks say: PV state before vCPUs, then each boot vCPU
/// created and given its CPUID.
struct Vm {
    vm: VmFd,
    pv: PvVm,
    vcpus: Vec<VcpuFd>,
    bases: Vec<Option<u32>>,
}

fn boot(kvm: &Kvm, config: &CpusConfig, validated: &Validated, hyperv: bool) -> Vm {
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    let pv = hooks::vm_created(&vm, validated.effective.clone()).expect("vm_created");
    // Cloud Hypervisor's in-kernel local APIC, which some PV MSRs need.
    vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
    let mut vcpus = Vec::new();
    let mut bases = Vec::new();
    for id in 0..u64::from(config.boot_vcpus) {
        let vcpu = hooks::create_vcpu(&pv, &vm, id).expect("create_vcpu");
        let mut cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .expect("KVM_GET_SUPPORTED_CPUID");
        if hyperv {
            cloud_hypervisor_hyperv_leaves(&mut cpuid);
        }
        hooks::generate_cpuid(pv.effective(), &mut cpuid).expect("generate_cpuid");
        let blocks = hooks::configure_vcpu_cpuid(&pv, &vcpu, id, &mut cpuid).expect("configure");
        bases.push(blocks.kvm);
        vcpus.push(vcpu);
    }
    Vm {
        vm,
        pv,
        vcpus,
        bases,
    }
}

/// What Cloud Hypervisor's `generate_common_cpuid` does for `kvm_hyperv=on`: drop the
/// block at 0x40000000 and put "Microsoft Hv" there.
fn cloud_hypervisor_hyperv_leaves(cpuid: &mut CpuId) {
    cpuid.retain(|e| !(KVM_CPUID_BASE..KVM_CPUID_BASE + 0x100).contains(&e.function));
    let leaf = |function, eax, ebx, ecx, edx| kvm_cpuid_entry2 {
        function,
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    };
    for e in [
        leaf(
            KVM_CPUID_BASE,
            0x4000_000a,
            0x7263_694d,
            0x666f_736f,
            0x7648_2074,
        ),
        leaf(KVM_CPUID_BASE + 1, 0x3123_7648, 0, 0, 0),
        leaf(KVM_CPUID_BASE + 3, 0x3000, 0, 0, 0),
        leaf(KVM_CPUID_BASE + 0xa, 0, 0, 0, 0),
    ] {
        cpuid.push(e).expect("room in the CPUID list");
    }
}

fn vcpu_cpuid(vcpu: &VcpuFd) -> CpuId {
    vcpu.get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .expect("KVM_GET_CPUID2")
}

#[test]
fn cpus_strings_end_up_in_every_vcpus_cpuid() {
    let kvm = kvm();
    let host = host(&kvm);
    eprintln!("host: {host:?}, {} host CPUs", host_cpus());
    for cpus in [
        "boot=2",
        "boot=2,dedicated=on",
        "boot=2,max=4,kvm_pv=[steal_time,pv_tlb_flush,pv_send_ipi]",
        "boot=1,enforce_pv_cpuid=off",
        "boot=2,kvm_pv=[],disable_exits=[pause]",
    ] {
        let (config, validated) = validated(cpus, &host);
        let vm = boot(&kvm, &config, &validated, false);
        assert_eq!(vm.vcpus.len(), config.boot_vcpus as usize);
        for (vcpu, base) in vm.vcpus.iter().zip(&vm.bases) {
            assert_eq!(*base, Some(KVM_CPUID_BASE), "{cpus}");
            let cpuid = vcpu_cpuid(vcpu);
            let leaves = KvmLeaves::find(cpuid.as_slice()).expect("KVM leaves");
            assert_eq!(leaves.base, KVM_CPUID_BASE, "{cpus}");
            assert_eq!(leaves.features, validated.effective.features, "{cpus}");
            assert_eq!(leaves.hints, validated.effective.hints, "{cpus}");
            let signatures = cpuid
                .as_slice()
                .iter()
                .filter(|e| [e.ebx, e.ecx, e.edx] == KVM_SIGNATURE)
                .count();
            assert_eq!(signatures, 1, "{cpus}: one KVM block");
        }
        assert_eq!(vm.pv.vcpus_created(), vm.vcpus.len());
    }
    // The defaults give what Cloud Hypervisor's guests see: everything KVM reports plus
    // msi_ext_dest_id, which the VMM backs.
    let (_, v) = validated("boot=1", &host);
    assert_eq!(v.effective.features, host.features | VMM_BACKS);
    let (_, v) = validated("boot=1,dedicated=on", &host);
    assert_eq!(v.effective.hints, KvmHints::REALTIME);
    assert!(!v.effective.features.contains(KvmFeatures::PV_UNHALT));
    assert_eq!(v.effective.disable_exits, host.allowed_exits);
}

#[test]
fn kvm_pv_off_leaves_no_kvm_signature() {
    let kvm = kvm();
    let (config, validated) = validated("boot=2,kvm_pv=off,dedicated=on", &host(&kvm));
    let vm = boot(&kvm, &config, &validated, false);
    for (vcpu, base) in vm.vcpus.iter().zip(&vm.bases) {
        assert_eq!(*base, None);
        assert_eq!(KvmLeaves::find(vcpu_cpuid(vcpu).as_slice()), None);
    }
}

#[test]
fn kvm_hyperv_keeps_the_kvm_leaves_at_0x40000100() {
    let kvm = kvm();
    let host = host(&kvm);
    let config = CpusConfig::parse("boot=2,kvm_hyperv=on").expect("parses");
    let validated = match config.validate(&host, host_cpus(), VMM_BACKS) {
        Ok(validated) => validated,
        Err(err) => {
            assert!(host.hyperv_lacks().is_some(), "{err}");
            assert!(matches!(err, CpusError::HypervUnsupported { .. }), "{err}");
            // Without KVM_CAP_HYPERV the VMM refuses kvm_hyperv=on; the CPUID placement
            // itself does not depend on it, so check it with the same leaves anyway.
            CpusConfig::parse("boot=2")
                .expect("parses")
                .validate(&host, host_cpus(), VMM_BACKS)
                .expect("valid")
        }
    };
    let vm = boot(&kvm, &config, &validated, true);
    for (vcpu, base) in vm.vcpus.iter().zip(&vm.bases) {
        assert_eq!(*base, Some(KVM_CPUID_ALT_BASE));
        let cpuid = vcpu_cpuid(vcpu);
        let leaves = KvmLeaves::find(cpuid.as_slice()).expect("KVM leaves");
        assert_eq!(leaves.base, KVM_CPUID_ALT_BASE);
        assert_eq!(leaves.features, validated.effective.features);
        let hv = cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == KVM_CPUID_BASE)
            .expect("Hyper-V signature leaf");
        assert_eq!(
            (hv.ebx, hv.ecx, hv.edx),
            (0x7263_694d, 0x666f_736f, 0x7648_2074)
        );
    }
}

/// KVM's own Hyper-V leaves through the hooks, where the host has them; elsewhere the hook
/// refuses, naming the capability the host lacks.
#[test]
fn the_hyperv_hooks_follow_the_host() {
    let kvm = kvm();
    let host = host(&kvm);
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    let (_, validated) = validated("boot=1", &host);
    let mut pv = hooks::vm_created(&vm, validated.effective.clone()).expect("vm_created");
    vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
    let vcpu = hooks::create_vcpu(&pv, &vm, 0).expect("create_vcpu");
    match host.hyperv_lacks() {
        Some(missing) => {
            let err = hooks::hyperv_leaves(&kvm, &host, Some(&vcpu)).expect_err("no Hyper-V");
            assert_eq!(
                err.to_string(),
                format!("kvm_hyperv=on: the host's KVM lacks {missing}")
            );
            eprintln!("{err}");
        }
        None => {
            let leaves = hooks::hyperv_leaves(&kvm, &host, Some(&vcpu)).expect("leaves");
            assert_eq!(leaves.vendor(), "Linux KVM Hv");
            hooks::enable_hyperv(&mut pv, leaves).expect("before any CPUID");
            let mut cpuid = kvm
                .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
                .expect("KVM_GET_SUPPORTED_CPUID");
            let blocks = hooks::configure_vcpu_cpuid(&pv, &vcpu, 0, &mut cpuid).expect("CPUID");
            assert_eq!(blocks, CpuidBlocks::planned(true, true));
            let leaves = KvmLeaves::find(vcpu_cpuid(&vcpu).as_slice()).expect("KVM leaves");
            assert_eq!(leaves.base, KVM_CPUID_ALT_BASE);
        }
    }
}

#[test]
fn halt_polling_changes_now_and_exits_wait_for_the_reboot() {
    let kvm = kvm();
    let host = host(&kvm);
    let (config, validated) = validated("boot=1", &host);
    let mut vm = boot(&kvm, &config, &validated, false);
    let patch: PvPatch =
        serde_json::from_str(r#"{"halt_poll_ns":50000,"disable_exits":["pause"]}"#).expect("json");
    let plan = plan_change(
        &config.kvm_pv,
        None,
        &patch,
        VmState::Running,
        &host,
        VMM_BACKS,
    );
    if !host.halt_poll {
        assert!(plan.is_err(), "{plan:?}");
        eprintln!("this host lacks KVM_CAP_HALT_POLL: checked the refusal instead");
        return;
    }
    let plan = plan.expect("accepted");
    assert_eq!(
        plan.applied_now,
        [ImmediateAction::SetHaltPollNs { ns: 50_000 }]
    );
    let timings: Vec<Timing> = plan.changes.iter().map(|c| c.timing).collect();
    if host
        .allowed_exits
        .contains(pv_features::exits::DisableExits::PAUSE)
    {
        assert_eq!(timings, [Timing::NextReboot, Timing::Now]);
    }
    hooks::apply_now(&mut vm.pv, &vm.vm, &plan.applied_now).expect("KVM_CAP_HALT_POLL");
    assert_eq!(vm.pv.effective().halt_poll_ns, Some(50_000));
    // Why disable_exits waits: with a vCPU in place, KVM's order forbids it.
    let err = vm
        .pv
        .set_disable_exits(&vm.vm, pv_features::exits::DisableExits::PAUSE)
        .expect_err("vCPUs exist");
    assert!(matches!(
        err,
        SetupError::Exits(ExitsError::VcpusExist { vcpus: 1 })
    ));
}

#[test]
fn a_pending_change_takes_effect_at_reboot() {
    let kvm = kvm();
    let host = host(&kvm);
    let (config, validated) = validated("boot=2", &host);
    let first = boot(&kvm, &config, &validated, false);
    let patch: PvPatch = serde_json::from_str(r#"{"dedicated":true}"#).expect("json");
    let plan = plan_change(
        &config.kvm_pv,
        None,
        &patch,
        VmState::Running,
        &host,
        VMM_BACKS,
    )
    .expect("accepted");
    assert!(plan.applied_now.is_empty());
    assert_eq!(plan.pending, Some(patch));
    // The running guest keeps its CPUID until the reboot.
    let leaves = KvmLeaves::find(vcpu_cpuid(&first.vcpus[0]).as_slice()).expect("leaves");
    assert_eq!(leaves.hints, KvmHints::empty());
    drop(first);

    let rebooted = CpusConfig {
        kvm_pv: hooks::reboot(&plan.new_requested, plan.pending),
        ..config
    };
    assert_eq!(rebooted.kvm_pv, plan.after_reboot);
    let validated = rebooted
        .validate(&host, host_cpus(), VMM_BACKS)
        .expect("valid");
    let second = boot(&kvm, &rebooted, &validated, false);
    for vcpu in &second.vcpus {
        let leaves = KvmLeaves::find(vcpu_cpuid(vcpu).as_slice()).expect("leaves");
        assert_eq!(leaves.hints, KvmHints::REALTIME);
        assert!(!leaves.features.contains(KvmFeatures::PV_UNHALT));
    }
}

#[test]
fn pv_msrs_restore_after_cpuid_and_read_back() {
    let kvm = kvm();
    let host = host(&kvm);
    let (config, validated) = validated("boot=1", &host);
    let vm = boot(&kvm, &config, &validated, false);
    let vcpu = &vm.vcpus[0];
    let features = vm.pv.effective().features;
    assert!(features.contains(KvmFeatures::STEAL_TIME | KvmFeatures::POLL_CONTROL));

    let before = hooks::save_msrs(vcpu, 0, features).expect("KVM_GET_MSRS");
    let indices: Vec<u32> = before.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, hooks::msrs_to_save(features));

    let mut saved = vec![(MSR_KVM_STEAL_TIME, 0x2000 | 1), (MSR_KVM_POLL_CONTROL, 0)];
    if features.contains(KvmFeatures::ASYNC_PF_INT) {
        saved.push((MSR_KVM_ASYNC_PF_INT, 0xec));
    }
    hooks::restore_msrs(vcpu, 0, &saved, features).expect("KVM_SET_MSRS");
    let after = hooks::save_msrs(vcpu, 0, features).expect("KVM_GET_MSRS");
    for (index, value) in &saved {
        let read = after.iter().find(|(i, _)| i == index).map(|(_, v)| *v);
        assert_eq!(read, Some(*value), "MSR {index:#x}");
    }
}

#[test]
fn pv_msrs_of_unadvertised_features_are_refused() {
    let kvm = kvm();
    let host = host(&kvm);
    let (config, validated) = validated("boot=1,kvm_pv=[pv_send_ipi]", &host);
    let vm = boot(&kvm, &config, &validated, false);
    let vcpu = &vm.vcpus[0];
    let features = vm.pv.effective().features;
    let saved = [(MSR_KVM_STEAL_TIME, 0x2000 | 1)];
    // Refused before KVM is asked.
    let err = hooks::restore_msrs(vcpu, 0, &saved, features).expect_err("not advertised");
    assert!(matches!(
        err,
        HookError::MsrList {
            vcpu: 0,
            source: MsrError::NotAdvertised { .. }
        }
    ));
    // Claiming the feature anyway: KVM's enforcement refuses it, and the error says where.
    if vm.pv.effective().enforce_pv_cpuid {
        let err = hooks::restore_msrs(vcpu, 0, &saved, features | KvmFeatures::STEAL_TIME)
            .expect_err("KVM enforces the CPUID");
        assert_eq!(
            err.to_string(),
            "KVM_SET_MSRS on vCPU 0 stopped at MSR 0x4b564d03: 0 of 1 done"
        );
    }
}

#[test]
fn a_snapshot_restores_onto_the_same_host() {
    let kvm = kvm();
    let host = host(&kvm);
    let (config, validated) = validated("boot=1,dedicated=on", &host);
    let saved = validated.effective.clone();
    let restored = hooks::check_restore(&saved, &host, VMM_BACKS).expect("same host");
    assert_eq!(restored, saved);
    let vm = boot(
        &kvm,
        &config,
        &Validated {
            effective: restored,
            warnings: Vec::new(),
        },
        false,
    );
    let leaves = KvmLeaves::find(vcpu_cpuid(&vm.vcpus[0]).as_slice()).expect("leaves");
    assert_eq!(leaves.features, saved.features);
    assert_eq!(leaves.hints, saved.hints);
}
