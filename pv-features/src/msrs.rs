//! KVM's paravirtual MSRs and the list a VMM saves and restores for a feature set.
//!
//! Source: the kernel's `Documentation/virt/kvm/x86/msr.rst` and
//! `arch/x86/include/uapi/asm/kvm_para.h`.

use kvm_bindings::{kvm_msr_entry, Msrs};

use crate::cpuid::KvmFeatures;

/// Legacy kvmclock wall clock (`MSR_KVM_WALL_CLOCK`, with [`KvmFeatures::CLOCKSOURCE`]).
pub const MSR_KVM_WALL_CLOCK: u32 = 0x11;
/// Legacy kvmclock system time (`MSR_KVM_SYSTEM_TIME`, with [`KvmFeatures::CLOCKSOURCE`]).
pub const MSR_KVM_SYSTEM_TIME: u32 = 0x12;
/// kvmclock wall clock (`MSR_KVM_WALL_CLOCK_NEW`, with [`KvmFeatures::CLOCKSOURCE2`]).
pub const MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
/// kvmclock system time (`MSR_KVM_SYSTEM_TIME_NEW`, with [`KvmFeatures::CLOCKSOURCE2`]).
pub const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
/// Async PF enable and shared area (`MSR_KVM_ASYNC_PF_EN`).
pub const MSR_KVM_ASYNC_PF_EN: u32 = 0x4b56_4d02;
/// The steal-time record (`MSR_KVM_STEAL_TIME`).
pub const MSR_KVM_STEAL_TIME: u32 = 0x4b56_4d03;
/// PV EOI enable and flag address (`MSR_KVM_PV_EOI_EN`).
pub const MSR_KVM_PV_EOI_EN: u32 = 0x4b56_4d04;
/// Host halt polling control (`MSR_KVM_POLL_CONTROL`).
pub const MSR_KVM_POLL_CONTROL: u32 = 0x4b56_4d05;
/// Async PF "page ready" interrupt vector (`MSR_KVM_ASYNC_PF_INT`).
pub const MSR_KVM_ASYNC_PF_INT: u32 = 0x4b56_4d06;
/// Async PF acknowledge, a write-only event, never saved (`MSR_KVM_ASYNC_PF_ACK`).
pub const MSR_KVM_ASYNC_PF_ACK: u32 = 0x4b56_4d07;
/// Migration control, emulated by the VMM, not KVM (`MSR_KVM_MIGRATION_CONTROL`).
pub const MSR_KVM_MIGRATION_CONTROL: u32 = 0x4b56_4d08;

/// Every PV MSR with the feature that makes it accessible, in restore order.
///
/// The order matters: the kvmclock system-time MSR before the wall clock (writing the wall
/// clock makes KVM fill in the guest structure from the clock), and `ASYNC_PF_INT` before
/// `ASYNC_PF_EN` (enabling interrupt delivery needs the vector already set). Restore all of
/// them only after `KVM_SET_CPUID2`: with PV CPUID enforcement on, KVM refuses MSRs whose
/// feature the vCPU's CPUID does not advertise.
pub const PV_MSRS: &[(u32, KvmFeatures)] = &[
    (MSR_KVM_SYSTEM_TIME_NEW, KvmFeatures::CLOCKSOURCE2),
    (MSR_KVM_WALL_CLOCK_NEW, KvmFeatures::CLOCKSOURCE2),
    (MSR_KVM_SYSTEM_TIME, KvmFeatures::CLOCKSOURCE),
    (MSR_KVM_WALL_CLOCK, KvmFeatures::CLOCKSOURCE),
    (MSR_KVM_ASYNC_PF_INT, KvmFeatures::ASYNC_PF_INT),
    (MSR_KVM_ASYNC_PF_EN, KvmFeatures::ASYNC_PF),
    (MSR_KVM_PV_EOI_EN, KvmFeatures::PV_EOI),
    (MSR_KVM_STEAL_TIME, KvmFeatures::STEAL_TIME),
    (MSR_KVM_POLL_CONTROL, KvmFeatures::POLL_CONTROL),
];

/// The PV MSRs a VMM saves and restores for a vCPU advertising `features`, in restore order.
/// `MSR_KVM_ASYNC_PF_ACK` is an event, not state; `MSR_KVM_MIGRATION_CONTROL` belongs to the
/// VMM that emulates it.
pub fn save_restore_list(features: KvmFeatures) -> Vec<u32> {
    PV_MSRS
        .iter()
        .filter(|(_, feature)| features.contains(*feature))
        .map(|(index, _)| *index)
        .collect()
}

/// The feature an index belongs to, or `None` if it is not a KVM PV MSR this crate saves.
pub fn feature_of(index: u32) -> Option<KvmFeatures> {
    PV_MSRS
        .iter()
        .find(|(i, _)| *i == index)
        .map(|(_, feature)| *feature)
}

/// Errors of building a restore list.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MsrError {
    /// The saved state holds an MSR whose feature the vCPU does not advertise.
    #[error(
        "saved MSR {index:#x} belongs to `{feature}`, which the vCPU's CPUID does not advertise"
    )]
    NotAdvertised {
        /// The MSR index.
        index: u32,
        /// The feature's name.
        feature: &'static str,
    },
    /// The saved state holds an MSR index twice.
    #[error("saved MSR {index:#x} appears twice")]
    Duplicate {
        /// The MSR index.
        index: u32,
    },
    /// More entries than `KVM_SET_MSRS` takes.
    #[error("too many MSR entries for KVM_SET_MSRS")]
    TooMany,
}

/// Builds the `KVM_SET_MSRS` list for saved PV MSR values, sorted into restore order.
/// Values for MSRs outside [`PV_MSRS`] are left to the caller. Refuses MSRs of features that
/// `features` (the vCPU's advertised set) lacks, as KVM's enforcement would, and duplicates.
pub fn restore_entries(saved: &[(u32, u64)], features: KvmFeatures) -> Result<Msrs, MsrError> {
    let mut seen = Vec::with_capacity(saved.len());
    for (index, _) in saved {
        if seen.contains(index) {
            return Err(MsrError::Duplicate { index: *index });
        }
        seen.push(*index);
        if let Some(feature) = feature_of(*index) {
            if !features.contains(feature) {
                return Err(MsrError::NotAdvertised {
                    index: *index,
                    feature: feature.name().unwrap_or("unknown"),
                });
            }
        }
    }
    let entries: Vec<kvm_msr_entry> = PV_MSRS
        .iter()
        .filter_map(|(index, _)| saved.iter().find(|(i, _)| i == index))
        .map(|(index, data)| kvm_msr_entry {
            index: *index,
            data: *data,
            ..Default::default()
        })
        .collect();
    Msrs::from_entries(&entries).map_err(|_| MsrError::TooMany)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_follows_features_in_restore_order() {
        assert!(save_restore_list(KvmFeatures::empty()).is_empty());
        assert_eq!(
            save_restore_list(KvmFeatures::STEAL_TIME),
            vec![MSR_KVM_STEAL_TIME]
        );
        assert_eq!(
            save_restore_list(KvmFeatures::all()),
            vec![
                MSR_KVM_SYSTEM_TIME_NEW,
                MSR_KVM_WALL_CLOCK_NEW,
                MSR_KVM_SYSTEM_TIME,
                MSR_KVM_WALL_CLOCK,
                MSR_KVM_ASYNC_PF_INT,
                MSR_KVM_ASYNC_PF_EN,
                MSR_KVM_PV_EOI_EN,
                MSR_KVM_STEAL_TIME,
                MSR_KVM_POLL_CONTROL,
            ]
        );
        let list = save_restore_list(KvmFeatures::all());
        assert!(!list.contains(&MSR_KVM_ASYNC_PF_ACK));
        assert!(!list.contains(&MSR_KVM_MIGRATION_CONTROL));
    }

    #[test]
    fn indices_match_the_abi() {
        assert_eq!(MSR_KVM_STEAL_TIME, 0x4b564d03);
        assert_eq!(MSR_KVM_POLL_CONTROL, 0x4b564d05);
        assert_eq!(feature_of(0x4b564d03), Some(KvmFeatures::STEAL_TIME));
        assert_eq!(feature_of(0x4b564d07), None);
        assert_eq!(feature_of(0x10), None);
    }

    #[test]
    fn restore_sorts_into_order() {
        let saved = [
            (MSR_KVM_STEAL_TIME, 0x1041),
            (MSR_KVM_ASYNC_PF_EN, 0x2000 | 0b1001),
            (0x10, 42), // not ours: left to the caller
            (MSR_KVM_ASYNC_PF_INT, 0xec),
        ];
        let features = KvmFeatures::STEAL_TIME | KvmFeatures::ASYNC_PF | KvmFeatures::ASYNC_PF_INT;
        let msrs = restore_entries(&saved, features).expect("valid");
        let order: Vec<(u32, u64)> = msrs.as_slice().iter().map(|e| (e.index, e.data)).collect();
        assert_eq!(
            order,
            vec![
                (MSR_KVM_ASYNC_PF_INT, 0xec),
                (MSR_KVM_ASYNC_PF_EN, 0x2009),
                (MSR_KVM_STEAL_TIME, 0x1041),
            ]
        );
    }

    #[test]
    fn restore_refuses_unadvertised_and_duplicates() {
        assert_eq!(
            restore_entries(&[(MSR_KVM_STEAL_TIME, 1)], KvmFeatures::PV_EOI).err(),
            Some(MsrError::NotAdvertised {
                index: MSR_KVM_STEAL_TIME,
                feature: "steal_time"
            })
        );
        let err = restore_entries(
            &[(MSR_KVM_PV_EOI_EN, 1), (MSR_KVM_PV_EOI_EN, 0)],
            KvmFeatures::PV_EOI,
        )
        .expect_err("duplicate");
        assert_eq!(err.to_string(), "saved MSR 0x4b564d04 appears twice");
    }
}
