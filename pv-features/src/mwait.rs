//! MONITOR/MWAIT in the guest's CPUID: visible exactly when the VM's MWAIT exits are
//! disabled.
//!
//! KVM leaves MONITOR (CPUID leaf 1, ECX bit 3) out of `KVM_GET_SUPPORTED_CPUID`, because
//! an intercepted MWAIT is emulated as a NOP. With MWAIT exits disabled
//! (`KVM_X86_DISABLE_EXITS_MWAIT`, which KVM allows only on a host whose own CPU has a
//! usable MWAIT) the guest's MWAIT runs on the host CPU, and the guest should see it, with
//! the host's MONITOR/MWAIT leaf 5, as QEMU's `-overcommit cpu-pm=on` shows it; otherwise
//! disabling those exits does nothing, since a guest never executes an instruction its
//! CPUID does not list.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

/// CPUID leaf 1, ECX: MONITOR/MWAIT.
pub const LEAF1_ECX_MONITOR: u32 = 1 << 3;
/// The MONITOR/MWAIT leaf.
pub const MONITOR_LEAF: u32 = 5;
/// Leaf 5 ECX bits passed on to the guest: EMX (MWAIT extensions are enumerated) and IBE
/// (interrupts break MWAIT even when masked), as QEMU passes them; the rest is reserved.
pub const LEAF5_ECX_PASSED: u32 = 0b11;

/// The MONITOR/MWAIT leaf's registers (smallest and largest monitor line, extensions,
/// sub-C-states per C-state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonitorLeaf {
    /// Smallest monitor-line size in bytes.
    pub eax: u32,
    /// Largest monitor-line size in bytes.
    pub ebx: u32,
    /// Extensions (only [`LEAF5_ECX_PASSED`] reach the guest).
    pub ecx: u32,
    /// Sub-C-states supported with MWAIT.
    pub edx: u32,
}

impl MonitorLeaf {
    /// The host CPU's own leaf 5, read with the CPUID instruction; `None` when the host
    /// CPU has no MONITOR/MWAIT (or no leaf 5).
    pub fn host() -> Option<Self> {
        let max = host_cpuid(0).eax;
        if max < MONITOR_LEAF || host_cpuid(1).ecx & LEAF1_ECX_MONITOR == 0 {
            return None;
        }
        let r = host_cpuid(MONITOR_LEAF);
        Some(Self {
            eax: r.eax,
            ebx: r.ebx,
            ecx: r.ecx,
            edx: r.edx,
        })
    }
}

/// The host CPU's CPUID leaf `leaf` (subleaf 0).
fn host_cpuid(leaf: u32) -> std::arch::x86_64::CpuidResult {
    // `__cpuid` is a safe function from Rust 1.87 on and `unsafe` before (rust-version is
    // 1.85), hence the allow.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 CPU, reads no memory and has no side effects.
    unsafe {
        std::arch::x86_64::__cpuid(leaf)
    }
}

/// Errors of laying out the MONITOR leaves.
#[derive(Debug, thiserror::Error)]
pub enum MwaitError {
    /// The CPUID list has no leaf 1 to carry the MONITOR bit.
    #[error("the vCPU's CPUID has no leaf 1 to carry MONITOR/MWAIT")]
    NoLeaf1,
    /// The CPUID list cannot hold leaf 5.
    #[error("adding the MONITOR/MWAIT leaf to the CPUID list: {0:?}")]
    TooManyEntries(vmm_sys_util::fam::Error),
}

/// Makes `cpuid` show MONITOR/MWAIT exactly when `mwait_in_guest` (the VM's MWAIT exits are
/// disabled) and the host has it (`host`): then leaf 1 ECX gets MONITOR and leaf 5 the
/// host's values (ECX reduced to [`LEAF5_ECX_PASSED`]); otherwise MONITOR is cleared and a
/// leaf 5 present in the list is zeroed. Returns whether the guest sees MONITOR/MWAIT.
pub fn apply(
    cpuid: &mut CpuId,
    mwait_in_guest: bool,
    host: Option<MonitorLeaf>,
) -> Result<bool, MwaitError> {
    let visible = mwait_in_guest.then_some(host).flatten();
    let leaf1 = cpuid
        .as_mut_slice()
        .iter_mut()
        .find(|e| e.function == 1 && e.index == 0)
        .ok_or(MwaitError::NoLeaf1)?;
    if visible.is_some() {
        leaf1.ecx |= LEAF1_ECX_MONITOR;
    } else {
        leaf1.ecx &= !LEAF1_ECX_MONITOR;
    }
    let leaf = visible.unwrap_or_default();
    let entry = kvm_cpuid_entry2 {
        function: MONITOR_LEAF,
        eax: leaf.eax,
        ebx: leaf.ebx,
        ecx: leaf.ecx & LEAF5_ECX_PASSED,
        edx: leaf.edx,
        ..Default::default()
    };
    match cpuid
        .as_mut_slice()
        .iter_mut()
        .find(|e| e.function == MONITOR_LEAF)
    {
        Some(existing) => *existing = entry,
        None if visible.is_some() => cpuid.push(entry).map_err(MwaitError::TooManyEntries)?,
        None => {}
    }
    Ok(visible.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: MonitorLeaf = MonitorLeaf {
        eax: 64,
        ebx: 64,
        ecx: 0xff,
        edx: 0x1111,
    };

    fn cpuid(with_leaf5: bool) -> CpuId {
        let mut entries = vec![
            kvm_cpuid_entry2 {
                function: 0,
                eax: 0xd,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 1,
                ecx: 0x8000_0001,
                ..Default::default()
            },
        ];
        if with_leaf5 {
            entries.push(kvm_cpuid_entry2 {
                function: MONITOR_LEAF,
                eax: 7,
                ..Default::default()
            });
        }
        CpuId::from_entries(&entries).expect("entries")
    }

    fn leaf(c: &CpuId, function: u32) -> Option<kvm_cpuid_entry2> {
        c.as_slice()
            .iter()
            .find(|e| e.function == function)
            .copied()
    }

    #[test]
    fn mwait_in_guest_shows_monitor_and_the_hosts_leaf() {
        for with_leaf5 in [false, true] {
            let mut c = cpuid(with_leaf5);
            assert!(apply(&mut c, true, Some(HOST)).expect("applies"));
            assert_eq!(
                leaf(&c, 1).expect("leaf 1").ecx,
                0x8000_0001 | LEAF1_ECX_MONITOR
            );
            let l5 = leaf(&c, MONITOR_LEAF).expect("leaf 5");
            assert_eq!((l5.eax, l5.ebx, l5.ecx, l5.edx), (64, 64, 0b11, 0x1111));
            assert_eq!(c.as_slice().iter().filter(|e| e.function == 5).count(), 1);
        }
    }

    #[test]
    fn mwait_exits_kept_hide_monitor() {
        let mut c = cpuid(true);
        c.as_mut_slice()[1].ecx |= LEAF1_ECX_MONITOR;
        assert!(!apply(&mut c, false, Some(HOST)).expect("applies"));
        assert_eq!(leaf(&c, 1).expect("leaf 1").ecx, 0x8000_0001);
        assert_eq!(leaf(&c, MONITOR_LEAF).expect("leaf 5").eax, 0);
        // No leaf 5 is added when MONITOR stays hidden.
        let mut c = cpuid(false);
        assert!(!apply(&mut c, false, Some(HOST)).expect("applies"));
        assert!(leaf(&c, MONITOR_LEAF).is_none());
    }

    #[test]
    fn a_host_without_monitor_shows_none() {
        let mut c = cpuid(false);
        assert!(!apply(&mut c, true, None).expect("applies"));
        assert_eq!(leaf(&c, 1).expect("leaf 1").ecx & LEAF1_ECX_MONITOR, 0);
    }

    #[test]
    fn no_leaf_1_is_an_error() {
        let mut c = CpuId::from_entries(&[kvm_cpuid_entry2::default()]).expect("entries");
        c.as_mut_slice()[0].function = 0x8000_0000;
        assert!(matches!(
            apply(&mut c, true, Some(HOST)),
            Err(MwaitError::NoLeaf1)
        ));
    }

    #[test]
    fn host_probe_agrees_with_the_cpu() {
        let has = std::arch::x86_64::__cpuid(1).ecx & LEAF1_ECX_MONITOR != 0;
        assert_eq!(
            MonitorLeaf::host().is_some(),
            has && std::arch::x86_64::__cpuid(0).eax >= 5
        );
    }
}
