//! KVM's paravirtual CPUID leaves: feature and hint bits, building the signature and
//! features leaves, choosing their base (the placement rule, also for a Hyper-V block beside
//! them), negotiating against the host, and merging them into a vCPU's CPUID list.
//!
//! Source of the bit numbers: the kernel's `Documentation/virt/kvm/x86/cpuid.rst` and
//! `arch/x86/include/uapi/asm/kvm_para.h`.

use std::fmt;

use bitflags::bitflags;
use kvm_bindings::{kvm_cpuid_entry2, CpuId};
use serde::{Deserialize, Serialize};

use crate::exits::DisableExits;
use crate::hyperv::HypervLeaves;

/// The usual base of the KVM leaf block (`KVM_CPUID_SIGNATURE`).
pub const KVM_CPUID_BASE: u32 = 0x4000_0000;
/// The base QEMU and Linux use for the KVM block when another hypervisor's block (Hyper-V)
/// occupies [`KVM_CPUID_BASE`]. Linux scans bases `0x40000000..0x40010000` in steps of 0x100.
pub const KVM_CPUID_ALT_BASE: u32 = 0x4000_0100;
/// Offset of the features leaf (`KVM_CPUID_FEATURES`) from the block base.
pub const KVM_CPUID_FEATURES_OFFSET: u32 = 1;
/// The signature "KVMKVMKVM\0\0\0" as EBX, ECX, EDX of the signature leaf.
pub const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];
/// Step between hypervisor leaf blocks that guests scan.
const HYPERVISOR_BLOCK_STEP: u32 = 0x100;
/// End (exclusive) of the hypervisor CPUID range that guests scan.
const HYPERVISOR_RANGE_END: u32 = 0x4001_0000;

bitflags! {
    /// KVM paravirtual feature bits (EAX of the features leaf).
    ///
    /// Names print and parse as the CLI spells them; see [`KvmFeatures::NAMES`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct KvmFeatures: u32 {
        /// kvmclock on the legacy MSRs 0x11/0x12 (`KVM_FEATURE_CLOCKSOURCE`).
        const CLOCKSOURCE = 1 << 0;
        /// Port 0x80 delays not needed (`KVM_FEATURE_NOP_IO_DELAY`).
        const NOP_IO_DELAY = 1 << 1;
        /// kvmclock on MSRs 0x4b564d00/01 (`KVM_FEATURE_CLOCKSOURCE2`).
        const CLOCKSOURCE2 = 1 << 3;
        /// Asynchronous page faults (`KVM_FEATURE_ASYNC_PF`).
        const ASYNC_PF = 1 << 4;
        /// The steal-time record (`KVM_FEATURE_STEAL_TIME`).
        const STEAL_TIME = 1 << 5;
        /// PV end of interrupt (`KVM_FEATURE_PV_EOI`).
        const PV_EOI = 1 << 6;
        /// Kick-CPU hypercall for PV spinlocks (`KVM_FEATURE_PV_UNHALT`).
        const PV_UNHALT = 1 << 7;
        /// PV remote TLB flush through the preempted byte (`KVM_FEATURE_PV_TLB_FLUSH`).
        const PV_TLB_FLUSH = 1 << 9;
        /// Async PF delivered as a VM exit to a nested guest (`KVM_FEATURE_ASYNC_PF_VMEXIT`).
        const ASYNC_PF_VMEXIT = 1 << 10;
        /// The SEND_IPI hypercall (`KVM_FEATURE_PV_SEND_IPI`).
        const PV_SEND_IPI = 1 << 11;
        /// Guest-controlled host halt polling (`KVM_FEATURE_POLL_CONTROL`).
        const POLL_CONTROL = 1 << 12;
        /// The SCHED_YIELD hypercall (`KVM_FEATURE_PV_SCHED_YIELD`).
        const PV_SCHED_YIELD = 1 << 13;
        /// Async PF "page ready" as an interrupt (`KVM_FEATURE_ASYNC_PF_INT`).
        const ASYNC_PF_INT = 1 << 14;
        /// Extended destination id in MSI address bits 11:5 (`KVM_FEATURE_MSI_EXT_DEST_ID`).
        const MSI_EXT_DEST_ID = 1 << 15;
        /// The MAP_GPA_RANGE hypercall (`KVM_FEATURE_HC_MAP_GPA_RANGE`).
        const HC_MAP_GPA_RANGE = 1 << 16;
        /// The migration control MSR (`KVM_FEATURE_MIGRATION_CONTROL`).
        const MIGRATION_CONTROL = 1 << 17;
        /// kvmclock is stable across vCPUs (`KVM_FEATURE_CLOCKSOURCE_STABLE_BIT`).
        const CLOCKSOURCE_STABLE = 1 << 24;
    }
}

impl KvmFeatures {
    /// Every feature with its CLI/JSON name, in bit order.
    pub const NAMES: &'static [(KvmFeatures, &'static str)] = &[
        (Self::CLOCKSOURCE, "clocksource"),
        (Self::NOP_IO_DELAY, "nop_io_delay"),
        (Self::CLOCKSOURCE2, "clocksource2"),
        (Self::ASYNC_PF, "async_pf"),
        (Self::STEAL_TIME, "steal_time"),
        (Self::PV_EOI, "pv_eoi"),
        (Self::PV_UNHALT, "pv_unhalt"),
        (Self::PV_TLB_FLUSH, "pv_tlb_flush"),
        (Self::ASYNC_PF_VMEXIT, "async_pf_vmexit"),
        (Self::PV_SEND_IPI, "pv_send_ipi"),
        (Self::POLL_CONTROL, "poll_control"),
        (Self::PV_SCHED_YIELD, "pv_sched_yield"),
        (Self::ASYNC_PF_INT, "async_pf_int"),
        (Self::MSI_EXT_DEST_ID, "msi_ext_dest_id"),
        (Self::HC_MAP_GPA_RANGE, "hc_map_gpa_range"),
        (Self::MIGRATION_CONTROL, "migration_control"),
        (Self::CLOCKSOURCE_STABLE, "clocksource_stable"),
    ];

    /// Features that KVM cannot back alone: the VMM has to implement something for each
    /// (extended-destination MSI routing, handling MAP_GPA_RANGE exits, the migration
    /// control MSR). They are advertised only when the VMM says it backs them.
    pub const VMM_PROVIDED: KvmFeatures = KvmFeatures::MSI_EXT_DEST_ID
        .union(KvmFeatures::HC_MAP_GPA_RANGE)
        .union(KvmFeatures::MIGRATION_CONTROL);
}

bitflags! {
    /// KVM paravirtual hint bits (EDX of the features leaf). Only the VMM's configuration
    /// decides them; the host has no say.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct KvmHints: u32 {
        /// vCPUs are never preempted (`KVM_HINTS_REALTIME`): the guest disables PV
        /// spinlocks, PV TLB flush and PV sched yield, and may poll in idle.
        const REALTIME = 1 << 0;
    }
}

impl KvmHints {
    /// Every hint with its name.
    pub const NAMES: &'static [(KvmHints, &'static str)] = &[(Self::REALTIME, "realtime")];
}

use crate::names::named_flags;
pub use crate::names::UnknownName;

named_flags!(KvmFeatures, "feature");
named_flags!(KvmHints, "hint");

/// A dependency rule between features (and exits, and hints) that the negotiation enforces
/// and that an explicit configuration must not violate.
///
/// Each rule is a row of the guest's own table, read from Linux's `arch/x86/kernel/kvm.c`,
/// `kvmclock.c` and KVM's `x86.c` (6.1, the lab's guest, and current mainline agree): a
/// feature that the guest would ignore, or that would make it fault, unless something else
/// is there too.
///
/// | feature | takes effect only with | without it the guest | turned off by |
/// |---|---|---|---|
/// | `pv_tlb_flush` | `steal_time` (the flush request travels in the record) | ignores it (`pv_tlb_flush_supported()`) | the realtime hint |
/// | `pv_sched_yield` | `steal_time` (it yields only to a preempted vCPU) | ignores it (`pv_sched_yield_supported()`) | the realtime hint |
/// | `pv_unhalt` | HLT exits (the kick wakes a vCPU halted in the host) | would wait for a kick that cannot wake it | the realtime hint (`PV spinlocks disabled with KVM_HINTS_REALTIME hints`) |
/// | `async_pf_int` | `async_pf` | writes `MSR_KVM_ASYNC_PF_EN`, which KVM refuses without `async_pf`: `unchecked MSR access error` | – |
/// | `async_pf` | `async_pf_int` (since Linux 5.10 page-ready events come only as an interrupt) | ignores it | – |
/// | `async_pf_vmexit` | `async_pf_int` (the guest sets its bit only in that setup) | ignores it | – |
/// | `clocksource_stable` | `clocksource` or `clocksource2` (it flags a kvmclock) | ignores it | – |
///
/// Not rules, but worth knowing: `pv_send_ipi`, `pv_tlb_flush`, `pv_sched_yield` and PV
/// spinlocks are ignored by a guest with one possible CPU; `poll_control` is written by the
/// guest's haltpoll cpuidle driver, which loads only with the realtime hint (or
/// `cpuidle_haltpoll.force`); `steal_time`, `pv_eoi`, `nop_io_delay`, `pv_send_ipi` and
/// `msi_ext_dest_id` need no other feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// `pv_tlb_flush` works through the steal-time record's preempted byte.
    PvTlbFlushNeedsStealTime,
    /// `pv_sched_yield` yields to preempted vCPUs, which the guest sees in the steal-time
    /// record.
    PvSchedYieldNeedsStealTime,
    /// `async_pf_int` makes the guest enable async PF through `MSR_KVM_ASYNC_PF_EN`, which
    /// KVM accepts only when `async_pf` is offered.
    AsyncPfIntNeedsAsyncPf,
    /// A Linux guest uses async PF only with interrupt delivery (`async_pf_int`).
    AsyncPfNeedsAsyncPfInt,
    /// The guest asks for async PF on VM exits only while it sets up `async_pf_int`.
    AsyncPfVmexitNeedsAsyncPfInt,
    /// `clocksource_stable` flags a kvmclock: it means nothing without one.
    ClocksourceStableNeedsClocksource,
    /// With HLT exits disabled a halted vCPU stays in guest mode, so the kick that
    /// `pv_unhalt` relies on cannot be the wake-up path the guest expects.
    NoPvUnhaltWithHltExitsDisabled,
    /// Under the realtime hint (`dedicated`) the guest turns PV TLB flush, PV sched yield and
    /// PV spinlocks off: offering them would say what the guest does not do.
    NotUnderRealtimeHint,
}

impl Rule {
    /// Every rule, in the order the negotiation applies them (a rule that removes a feature
    /// comes before the rules that need it: `async_pf` before `async_pf_vmexit`).
    pub const ALL: [Rule; 8] = [
        Rule::NoPvUnhaltWithHltExitsDisabled,
        Rule::NotUnderRealtimeHint,
        Rule::PvTlbFlushNeedsStealTime,
        Rule::PvSchedYieldNeedsStealTime,
        Rule::AsyncPfIntNeedsAsyncPf,
        Rule::AsyncPfNeedsAsyncPfInt,
        Rule::AsyncPfVmexitNeedsAsyncPfInt,
        Rule::ClocksourceStableNeedsClocksource,
    ];

    /// For a rule that one feature needs another: the feature, and what it needs (any one
    /// of these). `None` for the rules about exits and hints.
    pub fn needs(self) -> Option<(KvmFeatures, KvmFeatures)> {
        use KvmFeatures as F;
        match self {
            Rule::PvTlbFlushNeedsStealTime => Some((F::PV_TLB_FLUSH, F::STEAL_TIME)),
            Rule::PvSchedYieldNeedsStealTime => Some((F::PV_SCHED_YIELD, F::STEAL_TIME)),
            Rule::AsyncPfIntNeedsAsyncPf => Some((F::ASYNC_PF_INT, F::ASYNC_PF)),
            Rule::AsyncPfNeedsAsyncPfInt => Some((F::ASYNC_PF, F::ASYNC_PF_INT)),
            Rule::AsyncPfVmexitNeedsAsyncPfInt => Some((F::ASYNC_PF_VMEXIT, F::ASYNC_PF_INT)),
            Rule::ClocksourceStableNeedsClocksource => {
                Some((F::CLOCKSOURCE_STABLE, F::CLOCKSOURCE.union(F::CLOCKSOURCE2)))
            }
            Rule::NoPvUnhaltWithHltExitsDisabled | Rule::NotUnderRealtimeHint => None,
        }
    }

    /// `features` with what each of them needs added (the newest of a choice, e.g.
    /// `clocksource2`), until no [`Rule::needs`] rule is broken: the smallest list a user
    /// can give for those features.
    pub fn with_needs(mut features: KvmFeatures) -> KvmFeatures {
        loop {
            let before = features;
            for (feature, needs) in Rule::ALL.iter().filter_map(|r| r.needs()) {
                if features.contains(feature) && !features.intersects(needs) {
                    let newest = needs.iter().last().unwrap_or(needs);
                    features |= newest;
                }
            }
            if features == before {
                return features;
            }
        }
    }

    /// `features` without `gone`, and without every feature that then lacks what it needs
    /// ([`Rule::needs`]: no `steal_time` takes `pv_tlb_flush` and `pv_sched_yield` along):
    /// the largest list without `gone` that no rule refuses.
    pub fn without(features: KvmFeatures, gone: KvmFeatures) -> KvmFeatures {
        let mut left = features - gone;
        loop {
            let before = left;
            for (feature, needs) in Rule::ALL.iter().filter_map(|r| r.needs()) {
                if left.contains(feature) && !left.intersects(needs) {
                    left.remove(feature);
                }
            }
            if left == before {
                return left;
            }
        }
    }

    /// The features this rule removes from `features`, given the disabled exits and the
    /// hints; empty when the rule holds.
    pub fn violation(
        self,
        features: KvmFeatures,
        exits: DisableExits,
        hints: KvmHints,
    ) -> KvmFeatures {
        if let Some((feature, needs)) = self.needs() {
            return if features.contains(feature) && !features.intersects(needs) {
                feature
            } else {
                KvmFeatures::empty()
            };
        }
        match self {
            Rule::NoPvUnhaltWithHltExitsDisabled if exits.contains(DisableExits::HLT) => {
                features & KvmFeatures::PV_UNHALT
            }
            Rule::NotUnderRealtimeHint if hints.contains(KvmHints::REALTIME) => {
                features & Self::REALTIME_IGNORES
            }
            _ => KvmFeatures::empty(),
        }
    }

    /// What a Linux guest turns off under the realtime hint.
    pub const REALTIME_IGNORES: KvmFeatures = KvmFeatures::PV_TLB_FLUSH
        .union(KvmFeatures::PV_SCHED_YIELD)
        .union(KvmFeatures::PV_UNHALT);

    /// Why the rule exists, for error messages and reports.
    pub fn explain(self) -> &'static str {
        match self {
            Rule::PvTlbFlushNeedsStealTime => {
                "pv_tlb_flush needs steal_time: the flush request travels in the steal-time record"
            }
            Rule::PvSchedYieldNeedsStealTime => {
                "pv_sched_yield needs steal_time: the guest yields to preempted vCPUs, which it sees in the steal-time record"
            }
            Rule::AsyncPfIntNeedsAsyncPf => {
                "async_pf_int needs async_pf: the guest enables it through MSR_KVM_ASYNC_PF_EN, which KVM refuses without async_pf"
            }
            Rule::AsyncPfNeedsAsyncPfInt => {
                "async_pf needs async_pf_int: a Linux guest (5.10 and later) uses async page faults only with interrupt delivery"
            }
            Rule::AsyncPfVmexitNeedsAsyncPfInt => {
                "async_pf_vmexit needs async_pf_int: the guest asks for it only when it sets up async_pf_int"
            }
            Rule::ClocksourceStableNeedsClocksource => {
                "clocksource_stable needs clocksource or clocksource2: it flags a kvmclock"
            }
            Rule::NoPvUnhaltWithHltExitsDisabled => {
                "pv_unhalt is not advertised when HLT exits are disabled: a halted vCPU stays in guest mode"
            }
            Rule::NotUnderRealtimeHint => {
                "the realtime hint (dedicated=on) makes the guest turn pv_tlb_flush, pv_sched_yield and PV spinlocks (pv_unhalt) off"
            }
        }
    }
}

/// Why a requested feature is not in the effective set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "rule")]
pub enum DropReason {
    /// The host's KVM does not report it in `KVM_GET_SUPPORTED_CPUID`.
    HostLacks,
    /// It needs VMM support that this VMM did not declare (see [`KvmFeatures::VMM_PROVIDED`]).
    VmmLacks,
    /// A dependency rule removed it.
    Rule(Rule),
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::HostLacks => f.write_str("the host's KVM does not support it"),
            DropReason::VmmLacks => f.write_str("this VMM does not implement its host side"),
            DropReason::Rule(rule) => f.write_str(rule.explain()),
        }
    }
}

/// A requested feature that is not in the effective set, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// The feature's name, as the CLI spells it.
    pub feature: String,
    /// Why it was dropped.
    pub reason: DropReason,
    /// The reason in words.
    pub message: String,
}

impl Dropped {
    pub(crate) fn new(feature: KvmFeatures, reason: DropReason) -> Self {
        Self {
            feature: feature.name().unwrap_or("unknown").to_owned(),
            reason,
            message: reason.to_string(),
        }
    }
}

/// What goes into the negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiationInput {
    /// What the configuration asks for.
    pub requested: KvmFeatures,
    /// What the host's KVM reports it can back (see [`host_features`]).
    pub host: KvmFeatures,
    /// Which of [`KvmFeatures::VMM_PROVIDED`] the VMM implements.
    pub vmm_backs: KvmFeatures,
    /// The exits that will be disabled on the VM.
    pub disable_exits: DisableExits,
    /// The hints that will be advertised (the realtime hint turns some features off).
    pub hints: KvmHints,
}

/// The outcome of a negotiation: the effective features and every dropped one with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Negotiated {
    /// The features to advertise.
    pub features: KvmFeatures,
    /// Every requested feature that is not advertised, in bit order within each step.
    pub dropped: Vec<Dropped>,
}

/// Negotiates the requested features against the host and the VMM, then applies the
/// dependency [`Rule`]s. Never fails: what cannot be had is dropped and reported.
pub fn negotiate(input: NegotiationInput) -> Negotiated {
    let mut features = input.requested;
    let mut dropped = Vec::new();
    let mut remove = |features: &mut KvmFeatures, set: KvmFeatures, reason| {
        for (flag, _) in KvmFeatures::NAMES.iter().filter(|(f, _)| set.contains(*f)) {
            features.remove(*flag);
            dropped.push(Dropped::new(*flag, reason));
        }
    };
    let host_lacks = features - input.host;
    remove(&mut features, host_lacks, DropReason::HostLacks);
    let vmm_lacks = features & (KvmFeatures::VMM_PROVIDED - input.vmm_backs);
    remove(&mut features, vmm_lacks, DropReason::VmmLacks);
    for rule in Rule::ALL {
        let violated = rule.violation(features, input.disable_exits, input.hints);
        remove(&mut features, violated, DropReason::Rule(rule));
    }
    Negotiated { features, dropped }
}

/// The KVM features the host can back, read from its `KVM_GET_SUPPORTED_CPUID` list: EAX of
/// the features leaf of the block that carries the KVM signature. Empty when there is none.
pub fn host_features(supported: &CpuId) -> KvmFeatures {
    let entries = supported.as_slice();
    kvm_block_bases(entries)
        .first()
        .and_then(|base| find_leaf(entries, base + KVM_CPUID_FEATURES_OFFSET))
        .map(|leaf| KvmFeatures::from_bits_truncate(leaf.eax))
        .unwrap_or_default()
}

/// The signature and features leaves of the KVM block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmLeaves {
    /// The block base: [`KVM_CPUID_BASE`] or [`KVM_CPUID_ALT_BASE`].
    pub base: u32,
    /// Feature bits for EAX of the features leaf.
    pub features: KvmFeatures,
    /// Hint bits for EDX of the features leaf.
    pub hints: KvmHints,
}

impl KvmLeaves {
    /// The two CPUID entries: the signature leaf (EAX = highest KVM leaf, EBX/ECX/EDX =
    /// "KVMKVMKVM\0\0\0") and the features leaf (EAX = features, EDX = hints).
    pub fn entries(&self) -> [kvm_cpuid_entry2; 2] {
        let features_leaf = self.base + KVM_CPUID_FEATURES_OFFSET;
        [
            kvm_cpuid_entry2 {
                function: self.base,
                eax: features_leaf,
                ebx: KVM_SIGNATURE[0],
                ecx: KVM_SIGNATURE[1],
                edx: KVM_SIGNATURE[2],
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: features_leaf,
                eax: self.features.bits(),
                edx: self.hints.bits(),
                ..Default::default()
            },
        ]
    }

    /// Reads the KVM block back from a CPUID list (for example `KVM_GET_CPUID2` of a vCPU):
    /// `None` when no block carries the KVM signature.
    pub fn find(entries: &[kvm_cpuid_entry2]) -> Option<KvmLeaves> {
        let base = *kvm_block_bases(entries).first()?;
        let leaf = find_leaf(entries, base + KVM_CPUID_FEATURES_OFFSET)?;
        Some(KvmLeaves {
            base,
            features: KvmFeatures::from_bits_retain(leaf.eax),
            hints: KvmHints::from_bits_retain(leaf.edx),
        })
    }
}

/// Errors of merging the KVM leaves into a CPUID list.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    /// Every hypervisor leaf block a guest scans is taken by another hypervisor's leaves.
    #[error("no free hypervisor CPUID block between {KVM_CPUID_BASE:#x} and {HYPERVISOR_RANGE_END:#x} for the KVM leaves")]
    NoFreeBlock,
    /// The CPUID list cannot hold more entries.
    #[error("adding the KVM leaves to the CPUID list: {0:?}")]
    TooManyEntries(vmm_sys_util::fam::Error),
}

/// The placement rule: the first hypervisor block base, from [`KVM_CPUID_BASE`] up in steps
/// of 0x100, that `occupied` does not hold. With a Hyper-V block at 0x40000000 this is
/// [`KVM_CPUID_ALT_BASE`], where QEMU puts the KVM block too; Linux and KVM itself find the
/// KVM signature at any such base.
pub fn first_free_block(occupied: &[u32]) -> Option<u32> {
    (KVM_CPUID_BASE..HYPERVISOR_RANGE_END)
        .step_by(HYPERVISOR_BLOCK_STEP as usize)
        .find(|base| !occupied.contains(base))
}

/// Replaces any KVM leaf block in `cpuid` with `leaves`' features and hints, at the first
/// free block ([`first_free_block`]): [`KVM_CPUID_BASE`] unless another hypervisor's leaves
/// (Hyper-V) hold it, then [`KVM_CPUID_ALT_BASE`], and so on. Returns the base used.
pub fn merge_kvm_leaves(
    cpuid: &mut CpuId,
    features: KvmFeatures,
    hints: KvmHints,
) -> Result<u32, CpuidError> {
    remove_kvm_leaves(cpuid);
    let mut occupied: Vec<u32> = cpuid
        .as_slice()
        .iter()
        .filter_map(|entry| block_base(entry.function))
        .collect();
    occupied.sort_unstable();
    occupied.dedup();
    let base = first_free_block(&occupied).ok_or(CpuidError::NoFreeBlock)?;
    let leaves = KvmLeaves {
        base,
        features,
        hints,
    };
    for entry in leaves.entries() {
        cpuid.push(entry).map_err(CpuidError::TooManyEntries)?;
    }
    Ok(base)
}

/// Where the hypervisor leaf blocks sit in a vCPU's CPUID; `vm.info` shows it, each base in
/// hex (`{"hyperv": "0x40000000", "kvm": "0x40000100"}`), `null` for a block that is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct CpuidBlocks {
    /// The Hyper-V block's base (always [`KVM_CPUID_BASE`] when present).
    #[serde(with = "hex_base")]
    pub hyperv: Option<u32>,
    /// The KVM block's base.
    #[serde(with = "hex_base")]
    pub kvm: Option<u32>,
}

impl CpuidBlocks {
    /// Where [`place_blocks`] puts the blocks, without a CPUID list: for a VM not built yet.
    pub fn planned(hyperv: bool, kvm_leaves: bool) -> Self {
        let hyperv = hyperv.then_some(KVM_CPUID_BASE);
        let occupied: Vec<u32> = hyperv.into_iter().collect();
        Self {
            hyperv,
            kvm: if kvm_leaves {
                first_free_block(&occupied)
            } else {
                None
            },
        }
    }
}

mod hex_base {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(base: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match base {
            Some(b) => s.serialize_str(&format!("{b:#x}")),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                u32::from_str_radix(text.trim_start_matches("0x"), 16)
                    .map_err(|e| serde::de::Error::custom(format!("block base `{text}`: {e}")))
            })
            .transpose()
    }
}

/// Lays out the hypervisor blocks of a vCPU's CPUID: removes every KVM block and, with
/// `hyperv`, everything in the first block (KVM's own supported block included), puts the
/// Hyper-V leaves at [`KVM_CPUID_BASE`], then the KVM leaves (when `kvm` is given) at the
/// first free block ([`merge_kvm_leaves`]): [`KVM_CPUID_ALT_BASE`] beside Hyper-V,
/// [`KVM_CPUID_BASE`] without it. Returns where each block went.
pub fn place_blocks(
    cpuid: &mut CpuId,
    hyperv: Option<&HypervLeaves>,
    kvm: Option<(KvmFeatures, KvmHints)>,
) -> Result<CpuidBlocks, CpuidError> {
    remove_kvm_leaves(cpuid);
    let mut blocks = CpuidBlocks::default();
    if let Some(hv) = hyperv {
        cpuid.retain(|e| block_base(e.function) != Some(KVM_CPUID_BASE));
        for entry in hv.entries() {
            cpuid.push(*entry).map_err(CpuidError::TooManyEntries)?;
        }
        blocks.hyperv = Some(KVM_CPUID_BASE);
    }
    if let Some((features, hints)) = kvm {
        blocks.kvm = Some(merge_kvm_leaves(cpuid, features, hints)?);
    }
    Ok(blocks)
}

/// Removes every leaf block that carries the KVM signature (for `features: off`: the
/// host's supported CPUID carries one at [`KVM_CPUID_BASE`]).
pub fn remove_kvm_leaves(cpuid: &mut CpuId) {
    let kvm_blocks = kvm_block_bases(cpuid.as_slice());
    cpuid.retain(|entry| !block_base(entry.function).is_some_and(|b| kvm_blocks.contains(&b)));
}

/// The base of the hypervisor block a leaf belongs to, or `None` outside the range.
fn block_base(function: u32) -> Option<u32> {
    (KVM_CPUID_BASE..HYPERVISOR_RANGE_END)
        .contains(&function)
        .then_some(function & !(HYPERVISOR_BLOCK_STEP - 1))
}

/// Bases of the blocks whose signature leaf spells "KVMKVMKVM", in ascending order.
fn kvm_block_bases(entries: &[kvm_cpuid_entry2]) -> Vec<u32> {
    let mut bases: Vec<u32> = entries
        .iter()
        .filter(|e| {
            block_base(e.function) == Some(e.function) && [e.ebx, e.ecx, e.edx] == KVM_SIGNATURE
        })
        .map(|e| e.function)
        .collect();
    bases.sort_unstable();
    bases.dedup();
    bases
}

fn find_leaf(entries: &[kvm_cpuid_entry2], function: u32) -> Option<&kvm_cpuid_entry2> {
    entries.iter().find(|e| e.function == function)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        }
    }

    /// "Microsoft Hv" as Hyper-V's signature leaf spells it.
    fn hyperv_block(base: u32) -> Vec<kvm_cpuid_entry2> {
        vec![
            entry(base, base + 0xa, 0x7263_694d, 0x666f_736f, 0x7648_2074),
            entry(base + 1, 0x3123_7648, 0, 0, 0),
            entry(base + 0xa, 0, 0, 0, 0),
        ]
    }

    fn cpuid_of(entries: &[kvm_cpuid_entry2]) -> CpuId {
        CpuId::from_entries(entries).expect("fits")
    }

    #[test]
    fn bits_match_the_abi() {
        let expected = [
            ("clocksource", 0),
            ("nop_io_delay", 1),
            ("clocksource2", 3),
            ("async_pf", 4),
            ("steal_time", 5),
            ("pv_eoi", 6),
            ("pv_unhalt", 7),
            ("pv_tlb_flush", 9),
            ("async_pf_vmexit", 10),
            ("pv_send_ipi", 11),
            ("poll_control", 12),
            ("pv_sched_yield", 13),
            ("async_pf_int", 14),
            ("msi_ext_dest_id", 15),
            ("hc_map_gpa_range", 16),
            ("migration_control", 17),
            ("clocksource_stable", 24),
        ];
        assert_eq!(KvmFeatures::NAMES.len(), expected.len());
        for (name, bit) in expected {
            let flag = KvmFeatures::by_name(name).expect(name);
            assert_eq!(flag.bits(), 1 << bit, "{name}");
            assert_eq!(flag.name(), Some(name));
        }
        assert_eq!(KvmHints::REALTIME.bits(), 1);
        assert_eq!(KvmFeatures::all().bits().count_ones(), 17);
    }

    #[test]
    fn names_print_and_parse() {
        let set: KvmFeatures = "pv_send_ipi, steal_time,pv_tlb_flush"
            .parse()
            .expect("valid");
        assert_eq!(set.to_string(), "steal_time,pv_tlb_flush,pv_send_ipi");
        assert_eq!(set.to_string().parse::<KvmFeatures>().ok(), Some(set));
        assert_eq!(KvmFeatures::parse_list(""), Ok(KvmFeatures::empty()));
        assert_eq!((KvmFeatures::STEAL_TIME | KvmFeatures::PV_EOI).name(), None);
        assert_eq!(KvmHints::REALTIME.to_string(), "realtime");
    }

    #[test]
    fn unknown_names_are_errors_listing_valid_ones() {
        let err = "steal_time,STEAL_TIME"
            .parse::<KvmFeatures>()
            .expect_err("case matters");
        assert_eq!(err.kind, "feature");
        assert_eq!(err.name, "STEAL_TIME");
        assert!(err.valid.contains(&"pv_tlb_flush"));
        assert!(err
            .to_string()
            .starts_with("unknown feature `STEAL_TIME`; valid: clocksource, "));
        assert!(KvmFeatures::by_name("").is_err());
        let err = serde_json::from_str::<KvmHints>(r#"["dedicated"]"#).expect_err("unknown");
        assert!(
            err.to_string().contains("unknown hint `dedicated`"),
            "{err}"
        );
    }

    #[test]
    fn serde_round_trips_as_names() {
        let set = KvmFeatures::STEAL_TIME | KvmFeatures::CLOCKSOURCE_STABLE;
        let json = serde_json::to_string(&set).expect("serializes");
        assert_eq!(json, r#"["steal_time","clocksource_stable"]"#);
        assert_eq!(serde_json::from_str::<KvmFeatures>(&json).ok(), Some(set));
        assert!(serde_json::from_str::<KvmFeatures>("32").is_err());
    }

    #[test]
    fn leaves_are_bit_exact() {
        let leaves = KvmLeaves {
            base: KVM_CPUID_BASE,
            features: KvmFeatures::from_bits_truncate(0x0100_7efb),
            hints: KvmHints::REALTIME,
        };
        let [sig, feat] = leaves.entries();
        assert_eq!((sig.function, sig.index, sig.flags), (0x4000_0000, 0, 0));
        assert_eq!(sig.eax, 0x4000_0001);
        let mut text = Vec::new();
        for reg in [sig.ebx, sig.ecx, sig.edx] {
            text.extend_from_slice(&reg.to_le_bytes());
        }
        assert_eq!(&text, b"KVMKVMKVM\0\0\0");
        assert_eq!(
            (feat.function, feat.eax, feat.ebx, feat.ecx, feat.edx),
            (0x4000_0001, 0x0100_7efb, 0, 0, 1)
        );
        let alt = KvmLeaves {
            base: KVM_CPUID_ALT_BASE,
            ..leaves
        };
        let [sig, feat] = alt.entries();
        assert_eq!(
            (sig.function, sig.eax, feat.function),
            (0x4000_0100, 0x4000_0101, 0x4000_0101)
        );
        assert_eq!(KvmLeaves::find(&alt.entries()), Some(alt));
    }

    #[test]
    fn host_features_come_from_the_kvm_block() {
        let supported = cpuid_of(&[
            entry(0, 0xd, 0, 0, 0),
            entry(
                0x4000_0000,
                0x4000_0001,
                KVM_SIGNATURE[0],
                KVM_SIGNATURE[1],
                KVM_SIGNATURE[2],
            ),
            entry(0x4000_0001, 0x0100_7efb, 0, 0, 0),
        ]);
        assert_eq!(host_features(&supported).bits(), 0x0100_7efb);
        assert_eq!(
            host_features(&cpuid_of(&[entry(0, 0xd, 0, 0, 0)])),
            KvmFeatures::empty()
        );
        // A features leaf without a signature is not KVM's.
        assert_eq!(
            host_features(&cpuid_of(&[entry(0x4000_0001, 0xff, 0, 0, 0)])),
            KvmFeatures::empty()
        );
        // Unknown bits (2, 8) are ignored.
        let odd = cpuid_of(&[
            entry(
                0x4000_0000,
                0x4000_0001,
                KVM_SIGNATURE[0],
                KVM_SIGNATURE[1],
                KVM_SIGNATURE[2],
            ),
            entry(0x4000_0001, 0x104, 0, 0, 0),
        ]);
        assert_eq!(host_features(&odd), KvmFeatures::empty());
    }

    #[test]
    fn merge_replaces_existing_kvm_leaves() {
        let mut cpuid = cpuid_of(&[
            entry(0, 0xd, 0, 0, 0),
            entry(
                0x4000_0000,
                0x4000_0001,
                KVM_SIGNATURE[0],
                KVM_SIGNATURE[1],
                KVM_SIGNATURE[2],
            ),
            entry(0x4000_0001, 0x0100_7efb, 0, 0, 0),
            entry(0x8000_0000, 0x8000_0008, 0, 0, 0),
        ]);
        let base = merge_kvm_leaves(&mut cpuid, KvmFeatures::STEAL_TIME, KvmHints::REALTIME)
            .expect("merges");
        assert_eq!(base, KVM_CPUID_BASE);
        let entries = cpuid.as_slice();
        assert_eq!(entries.len(), 4);
        assert_eq!(
            entries.iter().filter(|e| e.function == 0x4000_0001).count(),
            1
        );
        let found = KvmLeaves::find(entries).expect("present");
        assert_eq!(found.features, KvmFeatures::STEAL_TIME);
        assert_eq!(found.hints, KvmHints::REALTIME);
    }

    #[test]
    fn merge_moves_aside_for_hyperv() {
        let mut entries = vec![entry(0, 0xd, 0, 0, 0)];
        entries.extend(hyperv_block(KVM_CPUID_BASE));
        let mut cpuid = cpuid_of(&entries);
        let base = merge_kvm_leaves(&mut cpuid, KvmFeatures::PV_SEND_IPI, KvmHints::empty())
            .expect("merges");
        assert_eq!(base, KVM_CPUID_ALT_BASE);
        let found = KvmLeaves::find(cpuid.as_slice()).expect("present");
        assert_eq!(found.base, KVM_CPUID_ALT_BASE);
        assert_eq!(found.features, KvmFeatures::PV_SEND_IPI);
        assert_eq!(cpuid.as_slice().len(), 6, "Hyper-V's three leaves stay");
        assert!(cpuid.as_slice().iter().any(|e| e.function == 0x4000_000a));

        // Merging again replaces the block at 0x40000100 instead of adding another.
        let base = merge_kvm_leaves(&mut cpuid, KvmFeatures::STEAL_TIME, KvmHints::empty())
            .expect("merges");
        assert_eq!(base, KVM_CPUID_ALT_BASE);
        assert_eq!(cpuid.as_slice().len(), 6);
        assert_eq!(
            KvmLeaves::find(cpuid.as_slice()).map(|l| l.features),
            Some(KvmFeatures::STEAL_TIME)
        );
    }

    #[test]
    fn remove_strips_every_kvm_block() {
        let mut entries = hyperv_block(KVM_CPUID_BASE);
        entries.extend(
            KvmLeaves {
                base: KVM_CPUID_ALT_BASE,
                features: KvmFeatures::all(),
                hints: KvmHints::empty(),
            }
            .entries(),
        );
        let mut cpuid = cpuid_of(&entries);
        remove_kvm_leaves(&mut cpuid);
        assert_eq!(cpuid.as_slice().len(), 3);
        assert_eq!(KvmLeaves::find(cpuid.as_slice()), None);
    }

    #[test]
    fn merge_fails_without_a_free_block() {
        let entries: Vec<_> = (0..0x100u32)
            .map(|i| entry(KVM_CPUID_BASE + i * HYPERVISOR_BLOCK_STEP, 0, 1, 2, 3))
            .collect();
        let mut cpuid = cpuid_of(&entries);
        let err = merge_kvm_leaves(&mut cpuid, KvmFeatures::STEAL_TIME, KvmHints::empty())
            .expect_err("full");
        assert!(matches!(err, CpuidError::NoFreeBlock));
        assert!(err.to_string().contains("0x40000000"), "{err}");
    }

    #[test]
    fn merge_fails_when_the_list_is_full() {
        let entries: Vec<_> = (0..kvm_bindings::KVM_MAX_CPUID_ENTRIES as u32)
            .map(|i| entry(i, 0, 0, 0, 0))
            .collect();
        let mut cpuid = cpuid_of(&entries);
        let err = merge_kvm_leaves(&mut cpuid, KvmFeatures::STEAL_TIME, KvmHints::empty())
            .expect_err("full");
        assert!(matches!(err, CpuidError::TooManyEntries(_)));
    }

    fn kvm_sig(base: u32) -> kvm_cpuid_entry2 {
        entry(
            base,
            base + 1,
            KVM_SIGNATURE[0],
            KVM_SIGNATURE[1],
            KVM_SIGNATURE[2],
        )
    }

    /// What KVM_GET_SUPPORTED_CPUID gives: basic leaves and KVM's block at 0x40000000.
    fn supported() -> Vec<kvm_cpuid_entry2> {
        vec![
            entry(0, 0xd, 0, 0, 0),
            kvm_sig(KVM_CPUID_BASE),
            entry(0x4000_0001, 0x0100_7efb, 0, 0, 0),
            entry(0x8000_0000, 0x8000_0008, 0, 0, 0),
        ]
    }

    fn hv() -> HypervLeaves {
        HypervLeaves::from_supported(
            &crate::hyperv::tests::kvm_61_leaves(),
            Some(crate::hyperv::SynicCap::Synic2),
        )
        .expect("valid")
    }

    /// The base a Linux guest takes the KVM leaves from: the first block, scanning
    /// 0x40000000..0x40010000 in steps of 0x100, whose signature leaf spells KVMKVMKVM.
    fn guest_kvm_base(entries: &[kvm_cpuid_entry2]) -> Option<u32> {
        (KVM_CPUID_BASE..HYPERVISOR_RANGE_END)
            .step_by(HYPERVISOR_BLOCK_STEP as usize)
            .find(|base| {
                find_leaf(entries, *base).is_some_and(|e| [e.ebx, e.ecx, e.edx] == KVM_SIGNATURE)
            })
    }

    #[test]
    fn hyperv_takes_the_first_block_and_kvm_moves_to_0x40000100() {
        let mut cpuid = cpuid_of(&supported());
        let features = KvmFeatures::from_bits_truncate(0x0100_7efb);
        let blocks = place_blocks(&mut cpuid, Some(&hv()), Some((features, KvmHints::empty())))
            .expect("fits");
        assert_eq!(
            blocks,
            CpuidBlocks {
                hyperv: Some(0x4000_0000),
                kvm: Some(0x4000_0100)
            }
        );
        let entries = cpuid.as_slice();
        let vendor = find_leaf(entries, KVM_CPUID_BASE).expect("vendor leaf");
        assert_eq!(vendor.ebx, 0x756e_694c, "\"Linu\" of Linux KVM Hv");
        assert!(
            vendor.eax < KVM_CPUID_ALT_BASE,
            "the Hyper-V block ends below the KVM block: {:#x}",
            vendor.eax
        );
        assert_eq!(kvm_block_bases(entries), [KVM_CPUID_ALT_BASE]);
        assert_eq!(guest_kvm_base(entries), Some(KVM_CPUID_ALT_BASE));
        let kvm = KvmLeaves::find(entries).expect("KVM block");
        assert_eq!((kvm.base, kvm.features), (KVM_CPUID_ALT_BASE, features));
        // KVM's 0x40000001 (features) was replaced by Hyper-V's interface leaf "Hv#1".
        assert_eq!(
            find_leaf(entries, 0x4000_0001).map(|e| e.eax),
            Some(crate::hyperv::HYPERV_INTERFACE_SIGNATURE)
        );
        // Basic leaves stay, Hyper-V's six leaves and KVM's two are in.
        assert_eq!(entries.len(), 2 + 6 + 2);
        assert_eq!(
            entries
                .iter()
                .filter(|e| block_base(e.function) == Some(KVM_CPUID_BASE))
                .count(),
            6
        );
    }

    #[test]
    fn a_kvm_block_already_at_0x40000100_is_replaced_not_doubled() {
        let mut cpuid = cpuid_of(&supported());
        place_blocks(
            &mut cpuid,
            Some(&hv()),
            Some((KvmFeatures::all(), KvmHints::REALTIME)),
        )
        .expect("fits");
        let before = cpuid.as_slice().len();
        // Laid out again (a reboot reuses nothing, but a VMM may pass a list it built).
        let blocks = place_blocks(
            &mut cpuid,
            Some(&hv()),
            Some((KvmFeatures::STEAL_TIME, KvmHints::empty())),
        )
        .expect("fits");
        assert_eq!(blocks.kvm, Some(KVM_CPUID_ALT_BASE));
        assert_eq!(cpuid.as_slice().len(), before);
        assert_eq!(kvm_block_bases(cpuid.as_slice()), [KVM_CPUID_ALT_BASE]);
        let kvm = KvmLeaves::find(cpuid.as_slice()).expect("KVM block");
        assert_eq!(
            (kvm.features, kvm.hints),
            (KvmFeatures::STEAL_TIME, KvmHints::empty())
        );

        // A KVM block at 0x40000100 without Hyper-V: it moves back to 0x40000000.
        let mut cpuid = cpuid_of(&[
            entry(0, 0xd, 0, 0, 0),
            kvm_sig(KVM_CPUID_ALT_BASE),
            entry(0x4000_0101, 0xff, 0, 0, 0),
        ]);
        let blocks = place_blocks(
            &mut cpuid,
            None,
            Some((KvmFeatures::PV_EOI, KvmHints::empty())),
        )
        .expect("fits");
        assert_eq!(blocks, CpuidBlocks::planned(false, true));
        assert_eq!(blocks.kvm, Some(KVM_CPUID_BASE));
        assert_eq!(kvm_block_bases(cpuid.as_slice()), [KVM_CPUID_BASE]);
        assert!(find_leaf(cpuid.as_slice(), 0x4000_0101).is_none());
        assert_eq!(cpuid.as_slice().len(), 3);
    }

    #[test]
    fn without_hyperv_the_kvm_leaves_keep_0x40000000() {
        let mut cpuid = cpuid_of(&supported());
        let blocks = place_blocks(
            &mut cpuid,
            None,
            Some((KvmFeatures::STEAL_TIME, KvmHints::empty())),
        )
        .expect("fits");
        assert_eq!(
            blocks,
            CpuidBlocks {
                hyperv: None,
                kvm: Some(KVM_CPUID_BASE)
            }
        );
        assert_eq!(guest_kvm_base(cpuid.as_slice()), Some(KVM_CPUID_BASE));
        assert_eq!(cpuid.as_slice().len(), 4);
    }

    #[test]
    fn hyperv_with_kvm_pv_off_leaves_no_kvm_signature() {
        let mut cpuid = cpuid_of(&supported());
        let blocks = place_blocks(&mut cpuid, Some(&hv()), None).expect("fits");
        assert_eq!(
            blocks,
            CpuidBlocks {
                hyperv: Some(KVM_CPUID_BASE),
                kvm: None
            }
        );
        assert_eq!(guest_kvm_base(cpuid.as_slice()), None);
        assert_eq!(KvmLeaves::find(cpuid.as_slice()), None);
        let blocks = place_blocks(&mut cpuid_of(&supported()), None, None).expect("fits");
        assert_eq!(blocks, CpuidBlocks::default());
    }

    #[test]
    fn the_plan_matches_the_placement() {
        for (hyperv, kvm) in [(false, false), (false, true), (true, false), (true, true)] {
            let mut cpuid = cpuid_of(&supported());
            let hv = hv();
            let placed = place_blocks(
                &mut cpuid,
                hyperv.then_some(&hv),
                kvm.then_some((KvmFeatures::STEAL_TIME, KvmHints::empty())),
            )
            .expect("fits");
            assert_eq!(placed, CpuidBlocks::planned(hyperv, kvm), "{hyperv} {kvm}");
        }
        assert_eq!(first_free_block(&[]), Some(KVM_CPUID_BASE));
        assert_eq!(
            first_free_block(&[KVM_CPUID_BASE, KVM_CPUID_ALT_BASE]),
            Some(0x4000_0200)
        );
        let all: Vec<u32> = (0..0x100u32)
            .map(|i| KVM_CPUID_BASE + i * HYPERVISOR_BLOCK_STEP)
            .collect();
        assert_eq!(first_free_block(&all), None);
    }

    #[test]
    fn placing_into_a_full_list_fails() {
        let mut entries: Vec<_> = (0..kvm_bindings::KVM_MAX_CPUID_ENTRIES as u32 - 3)
            .map(|i| entry(i, 0, 0, 0, 0))
            .collect();
        entries.push(kvm_sig(KVM_CPUID_BASE));
        let mut cpuid = cpuid_of(&entries);
        let err = place_blocks(&mut cpuid, Some(&hv()), None).expect_err("six leaves, room for 3");
        assert!(matches!(err, CpuidError::TooManyEntries(_)));
    }

    #[test]
    fn blocks_serialize_as_hex_bases() {
        let blocks = CpuidBlocks::planned(true, true);
        let json = serde_json::to_string(&blocks).expect("json");
        assert_eq!(json, r#"{"hyperv":"0x40000000","kvm":"0x40000100"}"#);
        assert_eq!(
            serde_json::from_str::<CpuidBlocks>(&json).expect("parses"),
            blocks
        );
        let json = serde_json::to_string(&CpuidBlocks::planned(false, false)).expect("json");
        assert_eq!(json, r#"{"hyperv":null,"kvm":null}"#);
        let err = serde_json::from_str::<CpuidBlocks>(r#"{"hyperv":"0xzz","kvm":null}"#)
            .expect_err("bad hex");
        assert!(err.to_string().contains("0xzz"), "{err}");
    }

    fn input(requested: KvmFeatures) -> NegotiationInput {
        NegotiationInput {
            requested,
            host: KvmFeatures::all() - KvmFeatures::VMM_PROVIDED,
            vmm_backs: KvmFeatures::empty(),
            disable_exits: DisableExits::empty(),
            hints: KvmHints::empty(),
        }
    }

    #[test]
    fn negotiation_reports_each_drop_once_with_its_reason() {
        let mut i = input(KvmFeatures::all());
        i.host.remove(KvmFeatures::STEAL_TIME);
        i.host.insert(KvmFeatures::HC_MAP_GPA_RANGE);
        i.disable_exits = DisableExits::HLT;
        let n = negotiate(i);
        let drops: Vec<(&str, DropReason)> = n
            .dropped
            .iter()
            .map(|d| (d.feature.as_str(), d.reason))
            .collect();
        assert_eq!(
            drops,
            vec![
                ("steal_time", DropReason::HostLacks),
                ("msi_ext_dest_id", DropReason::HostLacks),
                ("migration_control", DropReason::HostLacks),
                ("hc_map_gpa_range", DropReason::VmmLacks),
                (
                    "pv_unhalt",
                    DropReason::Rule(Rule::NoPvUnhaltWithHltExitsDisabled)
                ),
                (
                    "pv_tlb_flush",
                    DropReason::Rule(Rule::PvTlbFlushNeedsStealTime)
                ),
                (
                    "pv_sched_yield",
                    DropReason::Rule(Rule::PvSchedYieldNeedsStealTime)
                ),
            ]
        );
        assert!(!n.features.intersects(
            KvmFeatures::STEAL_TIME
                | KvmFeatures::PV_TLB_FLUSH
                | KvmFeatures::PV_UNHALT
                | KvmFeatures::PV_SCHED_YIELD
        ));
        assert!(n.features.contains(KvmFeatures::PV_SEND_IPI));
    }

    #[test]
    fn negotiation_keeps_a_consistent_request_whole() {
        let wanted = KvmFeatures::STEAL_TIME | KvmFeatures::PV_TLB_FLUSH | KvmFeatures::PV_UNHALT;
        let n = negotiate(input(wanted));
        assert_eq!(n.features, wanted);
        assert!(n.dropped.is_empty());
        let n = negotiate(input(KvmFeatures::empty()));
        assert!(n.features.is_empty() && n.dropped.is_empty());
    }

    #[test]
    fn rules_hold_and_explain() {
        use KvmFeatures as F;
        let none = DisableExits::empty();
        let rt = KvmHints::REALTIME;
        let no_hints = KvmHints::empty();
        // (rule, features, exits, hints, what the rule removes)
        let cases = [
            (
                Rule::PvTlbFlushNeedsStealTime,
                F::PV_TLB_FLUSH,
                none,
                no_hints,
                F::PV_TLB_FLUSH,
            ),
            (
                Rule::PvTlbFlushNeedsStealTime,
                F::PV_TLB_FLUSH | F::STEAL_TIME,
                DisableExits::all(),
                no_hints,
                F::empty(),
            ),
            (
                Rule::PvSchedYieldNeedsStealTime,
                F::PV_SCHED_YIELD,
                none,
                no_hints,
                F::PV_SCHED_YIELD,
            ),
            (
                Rule::PvSchedYieldNeedsStealTime,
                F::PV_SCHED_YIELD | F::STEAL_TIME,
                none,
                no_hints,
                F::empty(),
            ),
            (
                Rule::AsyncPfIntNeedsAsyncPf,
                F::ASYNC_PF_INT,
                none,
                no_hints,
                F::ASYNC_PF_INT,
            ),
            (
                Rule::AsyncPfIntNeedsAsyncPf,
                F::ASYNC_PF_INT | F::ASYNC_PF,
                none,
                no_hints,
                F::empty(),
            ),
            (
                Rule::AsyncPfNeedsAsyncPfInt,
                F::ASYNC_PF,
                none,
                no_hints,
                F::ASYNC_PF,
            ),
            (
                Rule::AsyncPfNeedsAsyncPfInt,
                F::ASYNC_PF | F::ASYNC_PF_INT,
                none,
                no_hints,
                F::empty(),
            ),
            (
                Rule::AsyncPfVmexitNeedsAsyncPfInt,
                F::ASYNC_PF_VMEXIT | F::ASYNC_PF,
                none,
                no_hints,
                F::ASYNC_PF_VMEXIT,
            ),
            (
                Rule::AsyncPfVmexitNeedsAsyncPfInt,
                F::ASYNC_PF_VMEXIT | F::ASYNC_PF_INT,
                none,
                no_hints,
                F::empty(),
            ),
            (
                Rule::ClocksourceStableNeedsClocksource,
                F::CLOCKSOURCE_STABLE,
                none,
                no_hints,
                F::CLOCKSOURCE_STABLE,
            ),
            (
                Rule::ClocksourceStableNeedsClocksource,
                F::CLOCKSOURCE_STABLE | F::CLOCKSOURCE,
                none,
                no_hints,
                F::empty(),
            ),
            (
                Rule::ClocksourceStableNeedsClocksource,
                F::CLOCKSOURCE_STABLE | F::CLOCKSOURCE2,
                none,
                no_hints,
                F::empty(),
            ),
            (
                Rule::NoPvUnhaltWithHltExitsDisabled,
                F::PV_UNHALT,
                DisableExits::PAUSE | DisableExits::MWAIT,
                no_hints,
                F::empty(),
            ),
            (
                Rule::NoPvUnhaltWithHltExitsDisabled,
                F::all(),
                DisableExits::HLT,
                no_hints,
                F::PV_UNHALT,
            ),
            (
                Rule::NotUnderRealtimeHint,
                F::all(),
                none,
                rt,
                F::PV_TLB_FLUSH | F::PV_SCHED_YIELD | F::PV_UNHALT,
            ),
            (
                Rule::NotUnderRealtimeHint,
                F::all(),
                DisableExits::all(),
                no_hints,
                F::empty(),
            ),
            (
                Rule::NotUnderRealtimeHint,
                F::STEAL_TIME | F::PV_SEND_IPI,
                none,
                rt,
                F::empty(),
            ),
        ];
        for (rule, features, exits, hints, removes) in cases {
            assert_eq!(
                rule.violation(features, exits, hints),
                removes,
                "{rule:?} on [{features}] exits [{exits}] hints {hints:?}"
            );
        }
        for rule in Rule::ALL {
            assert!(!rule.explain().is_empty());
            // Every rule has a case above in which it removes something.
            assert!(
                cases
                    .iter()
                    .any(|(r, _, _, _, removes)| *r == rule && !removes.is_empty()),
                "{rule:?}"
            );
        }
    }

    #[test]
    fn with_needs_completes_each_feature_into_a_list_no_rule_refuses() {
        use KvmFeatures as F;
        assert_eq!(
            Rule::with_needs(F::PV_SCHED_YIELD),
            F::PV_SCHED_YIELD | F::STEAL_TIME
        );
        assert_eq!(Rule::with_needs(F::ASYNC_PF), F::ASYNC_PF | F::ASYNC_PF_INT);
        assert_eq!(
            Rule::with_needs(F::ASYNC_PF_VMEXIT),
            F::ASYNC_PF_VMEXIT | F::ASYNC_PF_INT | F::ASYNC_PF
        );
        assert_eq!(
            Rule::with_needs(F::CLOCKSOURCE_STABLE),
            F::CLOCKSOURCE_STABLE | F::CLOCKSOURCE2
        );
        assert_eq!(
            Rule::with_needs(F::CLOCKSOURCE_STABLE | F::CLOCKSOURCE),
            F::CLOCKSOURCE_STABLE | F::CLOCKSOURCE
        );
        assert_eq!(Rule::with_needs(F::PV_SEND_IPI), F::PV_SEND_IPI);
        assert_eq!(
            Rule::without(F::all(), F::STEAL_TIME),
            F::all() - F::STEAL_TIME - F::PV_TLB_FLUSH - F::PV_SCHED_YIELD
        );
        assert_eq!(
            Rule::without(F::all(), F::ASYNC_PF_INT),
            F::all() - F::ASYNC_PF_INT - F::ASYNC_PF - F::ASYNC_PF_VMEXIT
        );
        assert_eq!(
            Rule::without(F::all(), F::CLOCKSOURCE),
            F::all() - F::CLOCKSOURCE,
            "clocksource2 still serves clocksource_stable"
        );
        for (flag, _) in F::NAMES {
            let list = Rule::with_needs(*flag);
            for rule in Rule::ALL {
                assert!(
                    rule.violation(list, DisableExits::empty(), KvmHints::empty())
                        .is_empty(),
                    "{rule:?} refuses [{list}]"
                );
            }
        }
    }

    #[test]
    fn negotiation_applies_rules_in_order() {
        // async_pf_int without async_pf goes first, which then takes async_pf_vmexit with it.
        let mut i = input(
            KvmFeatures::ASYNC_PF_INT | KvmFeatures::ASYNC_PF_VMEXIT | KvmFeatures::STEAL_TIME,
        );
        let n = negotiate(i);
        assert_eq!(n.features, KvmFeatures::STEAL_TIME);
        let reasons: Vec<_> = n
            .dropped
            .iter()
            .map(|d| (d.feature.as_str(), d.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                (
                    "async_pf_int",
                    DropReason::Rule(Rule::AsyncPfIntNeedsAsyncPf)
                ),
                (
                    "async_pf_vmexit",
                    DropReason::Rule(Rule::AsyncPfVmexitNeedsAsyncPfInt)
                ),
            ]
        );
        // The realtime hint takes what the guest turns off under it.
        i.requested = KvmFeatures::all();
        i.host = KvmFeatures::all();
        i.hints = KvmHints::REALTIME;
        let n = negotiate(i);
        assert!(!n.features.intersects(Rule::REALTIME_IGNORES));
        assert!(n
            .features
            .contains(KvmFeatures::PV_SEND_IPI | KvmFeatures::STEAL_TIME));
    }
}
