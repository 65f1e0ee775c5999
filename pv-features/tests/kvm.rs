//! KVM-backed tests: each creates real VMs on /dev/kvm and reads back what KVM holds.
//!
//! Every test here needs a usable /dev/kvm; `.ci/run` skips this binary loudly when there is
//! none. Tests named `real_kvm_*` are `#[ignore]`d because they need a KVM that runs guest
//! code faithfully (hardware KVM, or the KVM lab): on a software nested hypervisor such as
//! `kvm_pvm` a VMCALL from a real-mode guest ends in a shutdown exit. Run them with
//! `cargo test -p pv-features --test kvm -- --ignored` where real KVM is available.

use std::sync::atomic::Ordering;

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_msr_entry, kvm_userspace_memory_region, CpuId, Msrs,
    KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use pv_features::config::{EffectivePv, FeatureSelection, PvConfig};
use pv_features::cpuid::{
    CpuidBlocks, KvmFeatures, KvmHints, KvmLeaves, KVM_CPUID_ALT_BASE, KVM_CPUID_BASE,
};
use pv_features::exits::{DisableExits, ExitsError};
use pv_features::host::HostPv;
use pv_features::hypercall::{guest_return_value, Hypercall, HypercallAction, KVM_HC_SEND_IPI};
use pv_features::hyperv::{
    supported_hv_cpuid, HvCpuidSource, HypervLeaves, HV_X64_MSR_SCONTROL,
    HYPERV_INTERFACE_SIGNATURE,
};
use pv_features::msrs::{restore_entries, MSR_KVM_STEAL_TIME};
use pv_features::mwait;
use pv_features::setup::{PvVm, SetupError};
use pv_features::stats::{self, StatsFd};
use pv_features::steal_time::{read_snapshot, StealTimeMsr};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const MEM_SIZE: usize = 0x10000;
const CODE_AT: u64 = 0x1000;
const RECORD_AT: u64 = 0x2000;
const PORT: u16 = 0xf0;
/// `hlt; jmp short $-3`: a guest that halts again whenever it wakes. With HLT exits
/// disabled, a host interrupt (L1's timer tick in the lab) ends the in-guest HLT and the vCPU
/// runs on past it: a lone `hlt` then executes whatever follows (seen in CI: an `in` from port
/// 0x600), where the loop stays in the guest until the test's signal kicks it out.
const HLT_LOOP: &[u8] = &[0xf4, 0xeb, 0xfd];
/// Offset of the spurious-interrupt vector register in the local APIC page.
const APIC_SVR: usize = 0xf0;

fn kvm() -> Kvm {
    Kvm::new().expect("/dev/kvm must be usable for this test binary")
}

fn host(kvm: &Kvm) -> HostPv {
    HostPv::probe(kvm).expect("probing the host")
}

fn supported_cpuid(kvm: &Kvm) -> CpuId {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .expect("KVM_GET_SUPPORTED_CPUID")
}

fn resolve(cfg: PvConfig, host: &HostPv) -> EffectivePv {
    cfg.resolve(host, KvmFeatures::empty())
        .expect("config resolves")
}

/// A VM with the PV state applied, one vCPU with its CPUID set, and 64 KiB of guest RAM.
struct TinyVm {
    vm: VmFd,
    pv: PvVm,
    vcpu: VcpuFd,
    mem: GuestMemoryMmap,
}

fn tiny_vm(kvm: &Kvm, effective: EffectivePv, code: &[u8]) -> TinyVm {
    tiny_vm_with(kvm, effective, code, false)
}

/// Like [`tiny_vm`]; with `irqchip` the local APIC is in-kernel (SEND_IPI needs KVM's APIC
/// map), so HLT no longer exits to user space.
fn tiny_vm_with(kvm: &Kvm, effective: EffectivePv, code: &[u8], irqchip: bool) -> TinyVm {
    tiny_vm_full(kvm, effective, code, irqchip, DisableExits::empty())
}

/// A tiny [`HLT_LOOP`] guest whose VM gets `more` exits disabled by a second call, before
/// its vCPU.
fn tiny_vm_with_exits(kvm: &Kvm, effective: EffectivePv, more: DisableExits) -> TinyVm {
    tiny_vm_full(kvm, effective, HLT_LOOP, false, more)
}

fn tiny_vm_full(
    kvm: &Kvm,
    effective: EffectivePv,
    code: &[u8],
    irqchip: bool,
    more_exits: DisableExits,
) -> TinyVm {
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    let mut pv = PvVm::configure_vm(&vm, effective).expect("configure VM before vCPUs");
    if !more_exits.is_empty() {
        pv.set_disable_exits(&vm, more_exits)
            .expect("more exits, before vCPUs");
    }
    if irqchip {
        vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
    }
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("RAM");
    let host_addr = mem.get_host_address(GuestAddress(0)).expect("mapped");
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: MEM_SIZE as u64,
        userspace_addr: host_addr as u64,
        flags: 0,
    };
    // SAFETY: the region is `mem`'s own mapping of MEM_SIZE bytes, which lives in the
    // returned TinyVm together with the VM, so it outlives every use by the guest.
    unsafe { vm.set_user_memory_region(region) }.expect("KVM_SET_USER_MEMORY_REGION");
    mem.write_slice(code, GuestAddress(CODE_AT)).expect("code");
    let vcpu = pv.create_vcpu(&vm, 0).expect("KVM_CREATE_VCPU");
    let mut cpuid = supported_cpuid(kvm);
    pv.configure_vcpu(&vcpu, 0, &mut cpuid)
        .expect("configure vCPU");
    let mut sregs = vcpu.get_sregs().expect("sregs");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).expect("sregs");
    let mut regs = vcpu.get_regs().expect("regs");
    regs.rip = CODE_AT;
    regs.rflags = 2;
    vcpu.set_regs(&regs).expect("regs");
    TinyVm { vm, pv, vcpu, mem }
}

fn read_back_leaves(vcpu: &VcpuFd) -> Option<KvmLeaves> {
    let cpuid = vcpu
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .expect("KVM_GET_CPUID2");
    KvmLeaves::find(cpuid.as_slice())
}

fn signature_leaves(cpuid: &CpuId) -> usize {
    cpuid
        .as_slice()
        .iter()
        .filter(|e| [e.ebx, e.ecx, e.edx] == pv_features::cpuid::KVM_SIGNATURE)
        .count()
}

#[test]
fn host_probe_reports_kvm_features() {
    let kvm = kvm();
    let host = host(&kvm);
    eprintln!("host: {host:?}");
    // Every KVM this project targets has kvmclock v2 and steal time.
    assert!(
        host.features.contains(KvmFeatures::CLOCKSOURCE2),
        "{host:?}"
    );
    assert!(host.features.contains(KvmFeatures::STEAL_TIME), "{host:?}");
    // KVM never reports the features a VMM has to back itself.
    assert!(!host.features.contains(KvmFeatures::MIGRATION_CONTROL));
    assert_eq!(signature_leaves(&supported_cpuid(&kvm)), 1);
}

#[test]
fn vcpu_cpuid_carries_the_kvm_leaves_bit_for_bit() {
    let kvm = kvm();
    let host = host(&kvm);
    for cfg in [
        PvConfig::shared(),
        PvConfig::dedicated(),
        PvConfig {
            features: FeatureSelection::List(KvmFeatures::STEAL_TIME | KvmFeatures::PV_SEND_IPI),
            ..PvConfig::shared()
        },
    ] {
        let effective = resolve(cfg, &host);
        let t = tiny_vm(&kvm, effective.clone(), &[0xf4]);
        let leaves = read_back_leaves(&t.vcpu).expect("KVM leaves present");
        assert_eq!(leaves.base, KVM_CPUID_BASE, "{cfg:?}");
        assert_eq!(leaves.features, effective.features, "{cfg:?}");
        assert_eq!(leaves.hints, effective.hints, "{cfg:?}");
        let cpuid = t.vcpu.get_cpuid2(KVM_MAX_CPUID_ENTRIES).expect("cpuid");
        assert_eq!(signature_leaves(&cpuid), 1, "exactly one KVM block");
        let sig = cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == KVM_CPUID_BASE)
            .expect("signature");
        assert_eq!(sig.eax, KVM_CPUID_BASE + 1);
    }
    let dedicated = resolve(PvConfig::dedicated(), &host);
    assert_eq!(dedicated.hints, KvmHints::REALTIME);
    assert!(!dedicated.features.contains(KvmFeatures::PV_UNHALT));
}

#[test]
fn features_off_removes_the_kvm_signature() {
    let kvm = kvm();
    let cfg = PvConfig {
        features: FeatureSelection::Off,
        ..PvConfig::shared()
    };
    let t = tiny_vm(&kvm, resolve(cfg, &host(&kvm)), &[0xf4]);
    assert_eq!(read_back_leaves(&t.vcpu), None);
}

/// A Hyper-V block as KVM reports it (vendor "Linux KVM Hv", interface "Hv#1"), without
/// SynIC, for hosts whose KVM has no Hyper-V emulation: the CPUID is only data to them.
fn synthetic_hyperv() -> HypervLeaves {
    let e = |function, eax, ebx, ecx, edx| kvm_cpuid_entry2 {
        function,
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    };
    HypervLeaves::from_supported(
        &[
            e(
                0x4000_0000,
                0x4000_0005,
                0x756e_694c,
                0x564b_2078,
                0x7648_204d,
            ),
            e(0x4000_0001, HYPERV_INTERFACE_SIGNATURE, 0, 0, 0),
            e(0x4000_0002, 0x3839, 0x000a_0000, 0, 0),
            e(0x4000_0003, 0x2bf3, 0x30, 0, 0x530),
            e(0x4000_0004, 0x0004_0e2c, 0xfff, 0, 0),
            e(0x4000_0005, 0x400, 0x40, 0, 0),
        ],
        None,
    )
    .expect("valid leaves")
}

fn steal_time_msr_accepted(vcpu: &VcpuFd) -> usize {
    let msr = StealTimeMsr::encode(RECORD_AT).expect("aligned");
    let raw = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_KVM_STEAL_TIME,
        data: msr,
        ..Default::default()
    }])
    .expect("msrs");
    vcpu.set_msrs(&raw).expect("KVM_SET_MSRS")
}

#[test]
fn kvm_leaves_move_to_0x40000100_beside_hyperv_and_kvm_finds_them_there() {
    let kvm = kvm();
    let host = host(&kvm);
    let without_steal = PvConfig {
        features: FeatureSelection::List(KvmFeatures::CLOCKSOURCE2 | KvmFeatures::PV_EOI),
        ..PvConfig::shared()
    };
    for (cfg, steal_time) in [(PvConfig::shared(), true), (without_steal, false)] {
        let vm = kvm.create_vm().expect("VM");
        let mut pv = PvVm::configure_vm(&vm, resolve(cfg, &host)).expect("VM");
        pv.set_hyperv(synthetic_hyperv())
            .expect("before any vCPU's CPUID");
        let vcpu = pv.create_vcpu(&vm, 0).expect("vCPU");
        let mut cpuid = supported_cpuid(&kvm);
        let blocks = pv.configure_vcpu(&vcpu, 0, &mut cpuid).expect("vCPU");
        assert_eq!(
            blocks,
            CpuidBlocks {
                hyperv: Some(KVM_CPUID_BASE),
                kvm: Some(KVM_CPUID_ALT_BASE)
            }
        );
        let back = vcpu.get_cpuid2(KVM_MAX_CPUID_ENTRIES).expect("cpuid");
        let leaves = KvmLeaves::find(back.as_slice()).expect("KVM leaves");
        assert_eq!(leaves.base, KVM_CPUID_ALT_BASE);
        assert_eq!(leaves.features, pv.effective().features);
        assert_eq!(signature_leaves(&back), 1, "exactly one KVM block");
        let leaf = |f: u32| back.as_slice().iter().find(|e| e.function == f).copied();
        assert_eq!(
            leaf(KVM_CPUID_BASE + 1).map(|e| e.eax),
            Some(HYPERV_INTERFACE_SIGNATURE),
            "Hyper-V's interface leaf replaced KVM's features leaf"
        );
        assert_eq!(leaf(KVM_CPUID_BASE).map(|e| e.eax), Some(0x4000_0005));
        // With enforcement on, KVM takes MSR_KVM_STEAL_TIME only if the features leaf of the
        // KVM block it found advertises steal_time: it found the block at 0x40000100.
        assert_eq!(
            steal_time_msr_accepted(&vcpu),
            usize::from(steal_time),
            "steal_time advertised at 0x40000101: {steal_time}"
        );
    }
}

/// A VMM that creates its vCPUs and sets their CPUID itself (Cloud Hypervisor): its own
/// Hyper-V block stays at 0x40000000, the KVM leaves go to 0x40000100, enforcement is on
/// per vCPU, and once a vCPU was recorded the exits no longer change.
#[test]
fn a_vmm_built_cpuid_gets_the_pv_part_and_enforcement_per_vcpu() {
    let kvm = kvm();
    let host = host(&kvm);
    let without_steal = PvConfig {
        features: FeatureSelection::List(KvmFeatures::CLOCKSOURCE2 | KvmFeatures::PV_EOI),
        ..PvConfig::shared()
    };
    for (cfg, hyperv, steal_time) in [
        (PvConfig::shared(), false, true),
        (PvConfig::shared(), true, true),
        (without_steal, true, false),
    ] {
        let vm = kvm.create_vm().expect("VM");
        let mut pv = PvVm::configure_vm(&vm, resolve(cfg, &host)).expect("VM");
        // The VMM's own CPUID: the host's, with a Hyper-V block in place of the KVM one.
        let mut cpuid = supported_cpuid(&kvm);
        if hyperv {
            let mut entries: Vec<kvm_cpuid_entry2> = cpuid
                .as_slice()
                .iter()
                .filter(|e| !(KVM_CPUID_BASE..KVM_CPUID_BASE + 2).contains(&e.function))
                .copied()
                .collect();
            entries.extend(synthetic_hyperv().entries().iter().copied());
            cpuid = CpuId::from_entries(&entries).expect("CPUID");
        }
        let base = pv.vmm_cpuid(&mut cpuid).expect("PV part");
        let want = if hyperv {
            KVM_CPUID_ALT_BASE
        } else {
            KVM_CPUID_BASE
        };
        assert_eq!(base, Some(want), "hyperv {hyperv}");
        pv.record_vcpu_created();
        let vcpu = vm.create_vcpu(0).expect("vCPU");
        vcpu.set_cpuid2(&cpuid).expect("KVM_SET_CPUID2");
        pv.cpuid_set(&vcpu, 0).expect("enforcement");
        let leaves = read_back_leaves(&vcpu).expect("KVM leaves");
        assert_eq!(
            (leaves.base, leaves.features),
            (want, pv.effective().features)
        );
        assert_eq!(
            steal_time_msr_accepted(&vcpu),
            usize::from(steal_time),
            "enforced per vCPU: steal_time advertised {steal_time}"
        );
        let err = pv
            .set_disable_exits(&vm, DisableExits::PAUSE)
            .expect_err("a recorded vCPU exists");
        assert!(
            matches!(err, SetupError::Exits(ExitsError::VcpusExist { .. })),
            "{err:?}"
        );
    }
}

#[test]
fn hyperv_leaves_cannot_change_after_a_vcpu_cpuid_is_set() {
    let kvm = kvm();
    let vm = kvm.create_vm().expect("VM");
    let mut pv = PvVm::configure_vm(&vm, resolve(PvConfig::shared(), &host(&kvm))).expect("VM");
    let vcpu = pv.create_vcpu(&vm, 0).expect("vCPU");
    let mut cpuid = supported_cpuid(&kvm);
    let blocks = pv.configure_vcpu(&vcpu, 0, &mut cpuid).expect("vCPU");
    assert_eq!(blocks, CpuidBlocks::planned(false, true));
    match pv.set_hyperv(synthetic_hyperv()) {
        Err(SetupError::HypervTooLate { configured }) => assert_eq!(configured, 1),
        other => panic!("expected HypervTooLate, got {other:?}"),
    }
    assert!(pv.hyperv().is_none());
}

#[test]
fn hyperv_probe_matches_what_the_host_answers() {
    let kvm = kvm();
    let host = host(&kvm);
    eprintln!(
        "host: KVM_CAP_HYPERV {}, HV CPUID {:?}, SynIC {:?}; kvm_hyperv needs: {:?}",
        host.hyperv,
        host.hyperv_cpuid,
        host.hyperv_synic,
        host.hyperv_lacks()
    );
    let system = supported_hv_cpuid(&kvm);
    if host.hyperv_cpuid == Some(HvCpuidSource::System) {
        let supported =
            system.expect("the system fd answers where KVM_CAP_SYS_HYPERV_CPUID says so");
        let hv = HypervLeaves::from_supported(supported.as_slice(), host.hyperv_synic)
            .expect("KVM's own leaves are valid");
        eprintln!("Hyper-V leaves: {:?}", hv.report());
        assert_eq!(hv.vendor(), "Linux KVM Hv");
        assert!(hv.max_leaf() < KVM_CPUID_ALT_BASE);
    } else {
        let err = system.expect_err("no KVM_CAP_SYS_HYPERV_CPUID: the system fd refuses it");
        eprintln!("system fd: {err}");
    }
    // `kvm_hyperv=on` is possible exactly where both the capability and the ioctl exist.
    assert_eq!(
        host.hyperv_lacks().is_none(),
        host.hyperv && host.hyperv_cpuid.is_some()
    );
}

/// The Hyper-V leaves the host gives, from the system file descriptor or the vCPU's.
fn host_hyperv_leaves(kvm: &Kvm, host: &HostPv, vcpu: &VcpuFd) -> HypervLeaves {
    let supported = match host.hyperv_cpuid.expect("KVM_GET_SUPPORTED_HV_CPUID") {
        HvCpuidSource::System => supported_hv_cpuid(kvm),
        HvCpuidSource::Vcpu => supported_hv_cpuid(vcpu),
    }
    .expect("KVM_GET_SUPPORTED_HV_CPUID");
    HypervLeaves::from_supported(supported.as_slice(), host.hyperv_synic).expect("valid")
}

fn scontrol(vcpu: &VcpuFd) -> Option<u64> {
    let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: HV_X64_MSR_SCONTROL,
        ..Default::default()
    }])
    .expect("msrs");
    match vcpu.get_msrs(&mut msrs).expect("KVM_GET_MSRS") {
        1 => msrs.as_slice().first().map(|e| e.data),
        _ => None,
    }
}

#[test]
#[ignore = "needs a KVM with Hyper-V emulation (the KVM lab's L1, or hardware KVM); kvm_pvm has none"]
fn real_kvm_hyperv_block_and_kvm_leaves_read_back_with_synic_on() {
    let kvm = kvm();
    let host = host(&kvm);
    assert_eq!(host.hyperv_lacks(), None, "{host:?}");
    let vm = kvm.create_vm().expect("VM");
    let effective = resolve(PvConfig::shared(), &host);
    let mut pv = PvVm::configure_vm(&vm, effective.clone()).expect("VM");
    // SynIC needs the in-kernel local APIC.
    vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
    let vcpu = pv.create_vcpu(&vm, 0).expect("vCPU 0");
    let hv = host_hyperv_leaves(&kvm, &host, &vcpu);
    eprintln!("Hyper-V leaves: {:?}", hv.report());
    assert_eq!(hv.vendor(), "Linux KVM Hv");
    let synic = hv.synic();
    assert_eq!(
        synic, host.hyperv_synic,
        "KVM advertises SynIC, so it is enabled exactly where the host can"
    );
    pv.set_hyperv(hv.clone()).expect("before any CPUID");
    let mut cpuid = supported_cpuid(&kvm);
    let blocks = pv.configure_vcpu(&vcpu, 0, &mut cpuid).expect("vCPU 0");
    assert_eq!(blocks, CpuidBlocks::planned(true, true));

    let back = vcpu
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .expect("KVM_GET_CPUID2");
    let leaf = |f: u32| back.as_slice().iter().find(|e| e.function == f).copied();
    let vendor = leaf(KVM_CPUID_BASE).expect("vendor leaf");
    let mut text = Vec::new();
    for r in [vendor.ebx, vendor.ecx, vendor.edx] {
        text.extend_from_slice(&r.to_le_bytes());
    }
    assert_eq!(&text, b"Linux KVM Hv");
    assert!(vendor.eax >= KVM_CPUID_BASE + 5 && vendor.eax < KVM_CPUID_ALT_BASE);
    assert_eq!(
        leaf(KVM_CPUID_BASE + 1).map(|e| e.eax),
        Some(HYPERV_INTERFACE_SIGNATURE)
    );
    for e in hv.entries() {
        assert_eq!(
            leaf(e.function).map(|b| (b.eax, b.ebx, b.ecx, b.edx)),
            Some((e.eax, e.ebx, e.ecx, e.edx)),
            "leaf {:#x}",
            e.function
        );
    }
    let kvm_leaves = KvmLeaves::find(back.as_slice()).expect("KVM leaves");
    assert_eq!(kvm_leaves.base, KVM_CPUID_ALT_BASE);
    assert_eq!(kvm_leaves.features, effective.features);
    assert_eq!(kvm_leaves.hints, effective.hints);
    assert_eq!(signature_leaves(&back), 1);
    // KVM found its block at 0x40000100: it takes the steal-time MSR under enforcement.
    assert_eq!(steal_time_msr_accepted(&vcpu), 1);
    // SynIC is on: KVM answers its control MSR with the enable bit.
    if synic.is_some() {
        assert_eq!(scontrol(&vcpu), Some(1), "SynIC enabled on vCPU 0");
    }

    // The same leaves without SynIC: the control MSR stays off.
    let vm = kvm.create_vm().expect("VM");
    let mut pv = PvVm::configure_vm(&vm, effective).expect("VM");
    vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
    let vcpu = pv.create_vcpu(&vm, 0).expect("vCPU");
    let supported = supported_hv_cpuid(&vcpu).expect("vCPU fd answers too");
    let no_synic = HypervLeaves::from_supported(supported.as_slice(), None).expect("valid");
    assert_eq!(no_synic.synic(), None);
    pv.set_hyperv(no_synic).expect("before any CPUID");
    let mut cpuid = supported_cpuid(&kvm);
    pv.configure_vcpu(&vcpu, 0, &mut cpuid).expect("vCPU");
    assert_ne!(scontrol(&vcpu), Some(1), "SynIC was not enabled");
}

#[test]
fn disable_exits_after_a_vcpu_exists_is_a_typed_error() {
    let kvm = kvm();
    let host = host(&kvm);
    let vm = kvm.create_vm().expect("VM");
    let mut pv = PvVm::configure_vm(&vm, resolve(PvConfig::shared(), &host)).expect("VM");
    let _vcpu = pv.create_vcpu(&vm, 0).expect("vCPU");
    let err = pv
        .set_disable_exits(&vm, host.allowed_exits)
        .expect_err("too late");
    match err {
        SetupError::Exits(ExitsError::VcpusExist { vcpus }) => assert_eq!(vcpus, 1),
        other => panic!("unexpected error: {other:?}"),
    }
}

#[test]
fn disable_exits_before_vcpus_applies_and_refuses_what_the_host_refuses() {
    let kvm = kvm();
    let host = host(&kvm);
    eprintln!("host allows disabling [{}]", host.allowed_exits);
    assert!(
        !host.allowed_exits.is_empty(),
        "every KVM since 5.x allows some"
    );
    let vm = kvm.create_vm().expect("VM");
    pv_features::exits::disable_exits(&vm, host.allowed_exits, 0).expect("allowed exits");
    let refused = DisableExits::all() - host.allowed_exits;
    if refused.is_empty() {
        eprintln!("host allows every exit: refusal is covered by the unit tests only");
        return;
    }
    let vm = kvm.create_vm().expect("VM");
    let err = pv_features::exits::disable_exits(&vm, DisableExits::all(), 0).expect_err("refused");
    match err {
        ExitsError::Refused { refused: r, .. } => assert_eq!(r, refused),
        other => panic!("unexpected error: {other:?}"),
    }
}

/// How a tiny guest's `hlt` ends within `wait`: "hlt" when it exits to user space, "stayed
/// in the guest" when KVM_RUN had to be interrupted by a signal (HLT runs in guest mode).
fn hlt_outcome(vcpu: &mut VcpuFd, wait: std::time::Duration) -> String {
    extern "C" fn wake(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
    let signal = vmm_sys_util::signal::SIGRTMIN() + 3;
    vmm_sys_util::signal::register_signal_handler(signal, wake).expect("signal handler");
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let waker = {
        let done = done.clone();
        std::thread::spawn(move || {
            std::thread::sleep(wait);
            while !done.load(Ordering::Acquire) {
                // SAFETY: `me` is the test thread, alive until `done` is set; the signal has
                // a handler that does nothing.
                unsafe { libc::pthread_kill(me, signal) };
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        })
    };
    let outcome = match vcpu.run() {
        Ok(VcpuExit::Hlt) => "hlt".to_owned(),
        Ok(VcpuExit::Intr) => "stayed in the guest".to_owned(),
        Err(e) if e.errno() == libc::EINTR => "stayed in the guest".to_owned(),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("error {e}"),
    };
    done.store(true, Ordering::Release);
    waker.join().expect("waker");
    outcome
}

/// HLT first, PAUSE second, before the vCPU: a tiny [`HLT_LOOP`] guest on that VM.
fn hlt_then_pause_vm(kvm: &Kvm, host: &HostPv) -> TinyVm {
    let only_hlt = PvConfig {
        disable_exits: Some(DisableExits::HLT),
        ..PvConfig::shared()
    };
    tiny_vm_with_exits(kvm, resolve(only_hlt, host), DisableExits::PAUSE)
}

fn need_hlt_and_pause(host: &HostPv) {
    assert!(
        host.allowed_exits.contains(DisableExits::HLT | DisableExits::PAUSE),
        "this host's KVM cannot disable HLT and PAUSE exits (it allows [{}]): every KVM since 5.x can",
        host.allowed_exits
    );
}

#[test]
fn disable_exits_accumulate_in_the_effective_set() {
    let kvm = kvm();
    let host = host(&kvm);
    need_hlt_and_pause(&host);
    let t = hlt_then_pause_vm(&kvm, &host);
    assert_eq!(
        t.pv.effective().disable_exits,
        DisableExits::HLT | DisableExits::PAUSE
    );
}

/// What the effective set says is what KVM does: after HLT, then PAUSE, a guest's HLT still
/// stays in guest mode, while on a VM with PAUSE alone it exits. Real KVM only: kvm_pvm
/// (this project's development machines) exits on HLT whatever the VM asked.
#[test]
#[ignore = "needs real KVM (hardware or the KVM lab): scripts/test runs it there"]
fn real_kvm_disabled_exits_accumulate_in_kvm() {
    let kvm = kvm();
    let host = host(&kvm);
    need_hlt_and_pause(&host);
    let wait = std::time::Duration::from_millis(300);
    let only_pause = PvConfig {
        disable_exits: Some(DisableExits::PAUSE),
        ..PvConfig::shared()
    };
    let mut t = tiny_vm(&kvm, resolve(only_pause, &host), HLT_LOOP);
    assert_eq!(
        hlt_outcome(&mut t.vcpu, wait),
        "hlt",
        "control: HLT exits enabled"
    );
    let mut t = hlt_then_pause_vm(&kvm, &host);
    assert_eq!(
        hlt_outcome(&mut t.vcpu, wait),
        "stayed in the guest",
        "HLT exits came back after a second KVM_CAP_X86_DISABLE_EXITS"
    );
}

/// Leaf 1 ECX MONITOR and leaf 5 as KVM holds them for the vCPU.
fn monitor_read_back(vcpu: &VcpuFd) -> (bool, Option<[u32; 4]>) {
    let cpuid = vcpu
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .expect("KVM_GET_CPUID2");
    let entries = cpuid.as_slice();
    let monitor = entries
        .iter()
        .find(|e| e.function == 1)
        .is_some_and(|e| e.ecx & mwait::LEAF1_ECX_MONITOR != 0);
    let leaf5 = entries
        .iter()
        .find(|e| e.function == mwait::MONITOR_LEAF)
        .map(|e| [e.eax, e.ebx, e.ecx, e.edx]);
    (monitor, leaf5)
}

#[test]
fn monitor_stays_hidden_while_mwait_exits_are_kept() {
    let kvm = kvm();
    let host = host(&kvm);
    let cfg = PvConfig {
        disable_exits: Some(host.allowed_exits - DisableExits::MWAIT),
        ..PvConfig::shared()
    };
    let t = tiny_vm(&kvm, resolve(cfg, &host), &[0xf4]);
    let (monitor, leaf5) = monitor_read_back(&t.vcpu);
    assert!(!monitor, "MONITOR shown without MWAIT exits disabled");
    assert!(leaf5.is_none_or(|l| l == [0; 4]), "{leaf5:x?}");
}

/// With MWAIT exits disabled the vCPU's CPUID shows MONITOR and the host's leaf 5. Real
/// KVM only: kvm_pvm (the development machines) cannot disable MWAIT exits.
#[test]
#[ignore = "needs real KVM (hardware or the KVM lab): kvm_pvm cannot disable MWAIT exits"]
fn real_kvm_mwait_in_guest_shows_monitor() {
    let kvm = kvm();
    let host = host(&kvm);
    assert!(
        host.allowed_exits.contains(DisableExits::MWAIT),
        "this host cannot disable MWAIT exits (allows [{}])",
        host.allowed_exits
    );
    let want =
        mwait::MonitorLeaf::host().expect("KVM allows MWAIT in guest only with MWAIT on the host");
    let t = tiny_vm(&kvm, resolve(PvConfig::dedicated(), &host), &[0xf4]);
    let (monitor, leaf5) = monitor_read_back(&t.vcpu);
    assert!(monitor, "dedicated: MONITOR not shown");
    assert_eq!(
        leaf5,
        Some([
            want.eax,
            want.ebx,
            want.ecx & mwait::LEAF5_ECX_PASSED,
            want.edx
        ])
    );
}

#[test]
fn halt_poll_can_be_set_and_changed_after_vcpus() {
    let kvm = kvm();
    let host = host(&kvm);
    assert!(host.halt_poll, "KVM_CAP_HALT_POLL exists since Linux 5.15");
    let cfg = PvConfig {
        halt_poll_ns: Some(0),
        ..PvConfig::shared()
    };
    let vm = kvm.create_vm().expect("VM");
    let mut pv = PvVm::configure_vm(&vm, resolve(cfg, &host)).expect("VM");
    let _vcpu = pv.create_vcpu(&vm, 0).expect("vCPU");
    pv.set_halt_poll_ns(&vm, 200_000).expect("runtime change");
    assert_eq!(pv.effective().halt_poll_ns, Some(200_000));
}

#[test]
fn stats_files_name_the_pv_counters() {
    let kvm = kvm();
    let t = tiny_vm(&kvm, resolve(PvConfig::shared(), &host(&kvm)), &[0xf4]);
    let vcpu_stats = StatsFd::open(&t.vcpu).expect("vCPU stats fd");
    let vm_stats = StatsFd::open(&t.vm).expect("VM stats fd");
    let values = vcpu_stats.read().expect("read");
    for name in [
        stats::EXITS,
        stats::HALT_EXITS,
        stats::HYPERCALLS,
        stats::IO_EXITS,
        stats::TLB_FLUSH,
        stats::PREEMPTION_REPORTED,
        stats::DIRECTED_YIELD_ATTEMPTED,
    ] {
        assert!(values.get(name).is_some(), "vCPU statistic {name} missing");
    }
    assert_eq!(values.get(stats::EXITS), Some(0), "the vCPU never ran");
    assert!(vm_stats
        .read()
        .expect("read")
        .get(stats::REMOTE_TLB_FLUSH)
        .is_some());
    assert!(vcpu_stats.id().contains("vcpu"), "{}", vcpu_stats.id());
}

/// Runs the vCPU until an exit other than `Intr`, returning a short description.
fn run_once(vcpu: &mut VcpuFd) -> String {
    loop {
        match vcpu.run() {
            Ok(VcpuExit::Intr) => continue,
            Ok(VcpuExit::IoOut(port, data)) => return format!("out {port:#x} {data:?}"),
            Ok(VcpuExit::Hlt) => return "hlt".to_owned(),
            Ok(other) => return format!("{other:?}"),
            Err(e) => return format!("error {e}"),
        }
    }
}

#[test]
fn tiny_guest_port_write_and_hlt_move_the_counters() {
    let kvm = kvm();
    // mov al, 0x2a; out 0xf0, al; hlt
    let code = [0xb0, 0x2a, 0xe6, PORT as u8, 0xf4];
    let mut t = tiny_vm(&kvm, resolve(PvConfig::shared(), &host(&kvm)), &code);
    let stats_fd = StatsFd::open(&t.vcpu).expect("stats");
    let before = stats_fd.read().expect("read");
    assert_eq!(run_once(&mut t.vcpu), "out 0xf0 [42]");
    assert_eq!(run_once(&mut t.vcpu), "hlt");
    let after = stats_fd.read().expect("read");
    let delta = |name| after.get(name).unwrap_or(0) - before.get(name).unwrap_or(0);
    eprintln!(
        "exits +{} io_exits +{} halt_exits +{}",
        delta(stats::EXITS),
        delta(stats::IO_EXITS),
        delta(stats::HALT_EXITS)
    );
    // `io_exits` is counted by the vendor module's I/O exit handler (vmx/svm); kvm_pvm does
    // not count it, so the real-KVM test below checks it.
    assert!(delta(stats::HALT_EXITS) >= 1);
    assert!(delta(stats::EXITS) >= 2);
}

#[test]
fn steal_time_msr_follows_cpuid_and_kvm_fills_the_record() {
    let kvm = kvm();
    let host = host(&kvm);
    let msr = StealTimeMsr::encode(RECORD_AT).expect("aligned");
    let code = [0xe6, PORT as u8, 0xf4]; // out 0xf0, al; hlt

    // CPUID first: with enforcement on and steal_time not advertised, KVM refuses the MSR.
    let without = PvConfig {
        features: FeatureSelection::List(KvmFeatures::CLOCKSOURCE2),
        ..PvConfig::shared()
    };
    let t = tiny_vm(&kvm, resolve(without, &host), &code);
    assert!(
        restore_entries(&[(MSR_KVM_STEAL_TIME, msr)], t.pv.effective().features).is_err(),
        "our restore list refuses it too"
    );
    let raw = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_KVM_STEAL_TIME,
        data: msr,
        ..Default::default()
    }])
    .expect("msrs");
    assert_eq!(
        t.vcpu.set_msrs(&raw).expect("KVM_SET_MSRS"),
        0,
        "KVM refuses it"
    );

    let mut t = tiny_vm(&kvm, resolve(PvConfig::shared(), &host), &code);
    let entries = restore_entries(&[(MSR_KVM_STEAL_TIME, msr)], t.pv.effective().features)
        .expect("advertised");
    assert_eq!(t.vcpu.set_msrs(&entries).expect("KVM_SET_MSRS"), 1);
    assert_eq!(run_once(&mut t.vcpu), "out 0xf0 [0]");
    let gpa = StealTimeMsr::decode(msr, 36)
        .expect("valid")
        .locate(&t.mem)
        .expect("inside RAM")
        .expect("enabled");
    let snap = read_snapshot(&t.mem, gpa).expect("consistent record");
    eprintln!("steal-time record after one entry: {snap:?}");
    assert!(snap.version > 0, "KVM wrote the record at VM entry");
    assert_eq!(snap.version % 2, 0);
    // The version only moves forward.
    assert_eq!(run_once(&mut t.vcpu), "hlt");
    let later: u32 = t
        .mem
        .load(GuestAddress(RECORD_AT + 8), Ordering::Acquire)
        .expect("version");
    assert!(later >= snap.version);
}

fn is_amd() -> bool {
    let leaf = std::arch::x86_64::__cpuid(0);
    let mut vendor = Vec::new();
    for reg in [leaf.ebx, leaf.edx, leaf.ecx] {
        vendor.extend_from_slice(&reg.to_le_bytes());
    }
    vendor == b"AuthenticAMD" || vendor == b"HygonGenuine"
}

/// Runs one hypercall from a real-mode guest and returns the vCPU's RAX after it.
fn hypercall_in_guest(kvm: &Kvm, cfg: PvConfig, call: &Hypercall, irqchip: bool) -> u64 {
    let insn: [u8; 3] = if is_amd() {
        [0x0f, 0x01, 0xd9] // vmmcall
    } else {
        [0x0f, 0x01, 0xc1] // vmcall
    };
    let code = [insn[0], insn[1], insn[2], 0xe6, PORT as u8, 0xf4];
    let mut t = tiny_vm_with(kvm, resolve(cfg, &host(kvm)), &code, irqchip);
    if irqchip {
        // Software-enable the local APIC (SVR bit 8): KVM delivers only to enabled APICs.
        let mut lapic = t.vcpu.get_lapic().expect("KVM_GET_LAPIC");
        lapic.regs[APIC_SVR + 1] |= 1;
        t.vcpu.set_lapic(&lapic).expect("KVM_SET_LAPIC");
    }
    let mut regs = t.vcpu.get_regs().expect("regs");
    regs.rax = call.nr;
    regs.rbx = call.args[0];
    regs.rcx = call.args[1];
    regs.rdx = call.args[2];
    regs.rsi = call.args[3];
    t.vcpu.set_regs(&regs).expect("regs");
    let stats_fd = StatsFd::open(&t.vcpu).expect("stats");
    let exit = run_once(&mut t.vcpu);
    assert!(
        exit.starts_with("out 0xf0"),
        "guest did not reach the port write: {exit}"
    );
    assert_eq!(
        stats_fd.read_one(stats::HYPERCALLS).expect("read"),
        Some(1),
        "KVM counted the hypercall"
    );
    assert!(
        stats_fd.read_one(stats::IO_EXITS).expect("read") >= Some(1),
        "KVM counted the port write"
    );
    t.vcpu.get_regs().expect("regs").rax
}

#[test]
#[ignore = "needs real KVM (hardware or the KVM lab): kvm_pvm turns a guest VMCALL into a shutdown"]
fn real_kvm_vmcall_gets_the_answer_the_dispatcher_predicts() {
    let kvm = kvm();
    let host = host(&kvm);
    let real_mode = |nr, args: [u64; 4]| Hypercall {
        nr,
        args: [args[0], args[1], args[2], args[3], 0, 0],
        long_mode: false,
    };
    let only_steal = PvConfig {
        features: FeatureSelection::List(KvmFeatures::STEAL_TIME),
        ..PvConfig::shared()
    };
    let cases = [
        // An unknown hypercall.
        (PvConfig::shared(), real_mode(0x77, [0; 4]), false),
        // SEND_IPI with a logical-destination ICR: invalid.
        (
            PvConfig::shared(),
            real_mode(KVM_HC_SEND_IPI, [1, 0, 0, 0x8ec]),
            false,
        ),
        // SEND_IPI with a shorthand: invalid.
        (
            PvConfig::shared(),
            real_mode(KVM_HC_SEND_IPI, [1, 0, 0, 0xc00ec]),
            false,
        ),
        // SEND_IPI not advertised, enforcement on: unavailable.
        (
            only_steal,
            real_mode(KVM_HC_SEND_IPI, [1, 0, 0, 0xec]),
            false,
        ),
        // SEND_IPI to APIC 0 (this vCPU), APIC 1 (absent) and, from the high word, 32:
        // KVM returns how many it delivered, the ones that exist.
        (
            PvConfig::shared(),
            real_mode(KVM_HC_SEND_IPI, [0b11, 1, 0, 0xec]),
            true,
        ),
        // The same with the lowest APIC id past every vCPU: nothing to deliver.
        (
            PvConfig::shared(),
            real_mode(KVM_HC_SEND_IPI, [1, 0, 1, 0xec]),
            true,
        ),
        // The high word's base is `min + 32` in u32: from 2^32 - 32 it wraps to APIC 0,
        // which KVM delivers to.
        (
            PvConfig::shared(),
            real_mode(KVM_HC_SEND_IPI, [0, 1, 0xffff_ffe0, 0xec]),
            true,
        ),
    ];
    for (cfg, call, irqchip) in cases {
        let effective = resolve(cfg, &host);
        let dispatcher = pv_features::hypercall::Dispatcher {
            features: effective.features,
            enforce: effective.enforce_pv_cpuid,
            max_apic_id: 0,
            phys_bits: 36,
        };
        let predicted = match dispatcher.dispatch(&call) {
            Err(e) => guest_return_value(e.code(), false),
            Ok(HypercallAction::SendIpi(ipi)) => {
                guest_return_value(dispatcher.send_ipi_count(&ipi), false)
            }
            Ok(_) => 0,
        };
        let rax = hypercall_in_guest(&kvm, cfg, &call, irqchip);
        eprintln!(
            "hypercall {} args {:x?}: KVM {rax:#x}, predicted {predicted:#x}",
            call.nr,
            &call.args[..4]
        );
        assert_eq!(rax, predicted, "hypercall {} {:x?}", call.nr, call.args);
    }
}

mod properties {
    //! Every `PvConfig` that resolves against this host applies to a real VM without a KVM
    //! error, and the vCPU then holds exactly the KVM leaves the resolution promised.

    use super::*;
    use proptest::prelude::*;

    fn pv_config() -> impl Strategy<Value = PvConfig> {
        let features = prop_oneof![
            Just(FeatureSelection::All),
            Just(FeatureSelection::Off),
            any::<u32>().prop_map(|b| FeatureSelection::List(KvmFeatures::from_bits_truncate(b))),
        ];
        (
            features,
            any::<bool>(),
            prop::option::of((0u32..16).prop_map(DisableExits::from_bits_truncate)),
            prop::option::of(prop_oneof![Just(0u32), any::<u32>()]),
            any::<bool>(),
        )
            .prop_map(
                |(features, dedicated, disable_exits, halt_poll_ns, enforce_pv_cpuid)| PvConfig {
                    features,
                    dedicated,
                    disable_exits,
                    halt_poll_ns,
                    enforce_pv_cpuid,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn every_config_that_resolves_applies_to_a_real_vm(cfg in pv_config()) {
            let kvm = kvm();
            let host = host(&kvm);
            let Ok(effective) = cfg.resolve(&host, KvmFeatures::empty()) else {
                return Ok(());
            };
            let vm = kvm.create_vm().expect("KVM_CREATE_VM");
            let pv = PvVm::configure_vm(&vm, effective.clone())
                .unwrap_or_else(|e| panic!("{cfg:?}: configure_vm: {e}"));
            for id in 0..2 {
                let vcpu = pv.create_vcpu(&vm, id).expect("KVM_CREATE_VCPU");
                let mut cpuid = supported_cpuid(&kvm);
                pv.configure_vcpu(&vcpu, id, &mut cpuid)
                    .unwrap_or_else(|e| panic!("{cfg:?}: configure_vcpu {id}: {e}"));
                match read_back_leaves(&vcpu) {
                    Some(leaves) => {
                        prop_assert!(effective.leaves, "{:?}: leaves without a signature", cfg);
                        prop_assert_eq!(leaves.features, effective.features, "{:?}", cfg);
                        prop_assert_eq!(leaves.hints, effective.hints, "{:?}", cfg);
                    }
                    None => prop_assert!(!effective.leaves, "{:?}: no KVM leaves", cfg),
                }
            }
        }
    }
}
