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
use pv_features::cpuid::{KvmFeatures, KvmHints, KvmLeaves, KVM_CPUID_ALT_BASE, KVM_CPUID_BASE};
use pv_features::exits::{DisableExits, ExitsError};
use pv_features::host::HostPv;
use pv_features::hypercall::{guest_return_value, Hypercall, HypercallAction, KVM_HC_SEND_IPI};
use pv_features::msrs::{restore_entries, MSR_KVM_STEAL_TIME};
use pv_features::setup::{PvVm, SetupError};
use pv_features::stats::{self, StatsFd};
use pv_features::steal_time::{read_snapshot, StealTimeMsr};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const MEM_SIZE: usize = 0x10000;
const CODE_AT: u64 = 0x1000;
const RECORD_AT: u64 = 0x2000;
const PORT: u16 = 0xf0;
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
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    let pv = PvVm::configure_vm(&vm, effective).expect("configure VM before vCPUs");
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

#[test]
fn kvm_leaves_move_to_0x40000100_beside_hyperv() {
    let kvm = kvm();
    let vm = kvm.create_vm().expect("VM");
    let pv = PvVm::configure_vm(&vm, resolve(PvConfig::shared(), &host(&kvm))).expect("VM");
    let vcpu = pv.create_vcpu(&vm, 0).expect("vCPU");
    let mut cpuid = supported_cpuid(&kvm);
    // Stand in for Hyper-V's block: signature "Microsoft Hv" at 0x40000000, replacing KVM's.
    for e in cpuid.as_mut_slice() {
        if e.function == KVM_CPUID_BASE {
            *e = kvm_cpuid_entry2 {
                function: KVM_CPUID_BASE,
                eax: 0x4000_0001,
                ebx: 0x7263_694d,
                ecx: 0x666f_736f,
                edx: 0x7648_2074,
                ..Default::default()
            };
        } else if e.function == KVM_CPUID_BASE + 1 {
            e.eax = 0x3123_7648; // "Hv#1"
        }
    }
    let base = pv.configure_vcpu(&vcpu, 0, &mut cpuid).expect("vCPU");
    assert_eq!(base, Some(KVM_CPUID_ALT_BASE));
    let leaves = read_back_leaves(&vcpu).expect("KVM leaves");
    assert_eq!(leaves.base, KVM_CPUID_ALT_BASE);
    assert_eq!(leaves.features, pv.effective().features);
    let back = vcpu.get_cpuid2(KVM_MAX_CPUID_ENTRIES).expect("cpuid");
    let hv = back
        .as_slice()
        .iter()
        .find(|e| e.function == KVM_CPUID_BASE + 1)
        .expect("Hyper-V interface leaf kept");
    assert_eq!(hv.eax, 0x3123_7648);
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
