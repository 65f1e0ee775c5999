//! Counters of the vCPU exits that reach pv-vmm's run loop, per vCPU and by kind.
//!
//! KVM's own statistics (`exits`, `io_exits`, `hypercalls`, ...) count exits into KVM, most
//! of which KVM handles in the kernel; these count what then came out of `KVM_RUN` to this
//! process. The difference is the point: a PV hypercall or a steal-time MSR write that KVM
//! serves in the kernel shows in KVM's statistics and not here.
//!
//! Each vCPU thread bumps only its own counters with relaxed atomic adds (no lock, no
//! ordering needed: they are statistics), and each vCPU's counters sit on their own cache
//! line so that vCPU threads never share one.

use std::sync::atomic::{AtomicU64, Ordering};

use kvm_ioctls::VcpuExit;
use serde::Serialize;

/// The kinds of exit pv-vmm counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Port I/O (`KVM_EXIT_IO`), string I/O included.
    Io,
    /// An access to guest-physical memory that is not RAM (`KVM_EXIT_MMIO`).
    Mmio,
    /// A hypercall KVM hands to user space (`KVM_EXIT_HYPERCALL`).
    Hypercall,
    /// An MSR access KVM hands to user space (`KVM_EXIT_X86_RDMSR`, `KVM_EXIT_X86_WRMSR`).
    Msr,
    /// Anything else (HLT, shutdown, system events, internal errors, failed entries, ...).
    Other,
}

impl ExitKind {
    /// The kind of an exit `KVM_RUN` returned.
    pub fn of(exit: &VcpuExit<'_>) -> Self {
        match exit {
            VcpuExit::IoIn(..) | VcpuExit::IoOut(..) => ExitKind::Io,
            VcpuExit::MmioRead(..) | VcpuExit::MmioWrite(..) => ExitKind::Mmio,
            VcpuExit::Hypercall(_) => ExitKind::Hypercall,
            VcpuExit::X86Rdmsr(_) | VcpuExit::X86Wrmsr(_) => ExitKind::Msr,
            _ => ExitKind::Other,
        }
    }
}

/// One vCPU's counters, written by its thread.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct ExitCounters {
    io: AtomicU64,
    mmio: AtomicU64,
    hypercall: AtomicU64,
    msr: AtomicU64,
    other: AtomicU64,
}

impl ExitCounters {
    /// Counts one exit of `kind`.
    pub fn record(&self, kind: ExitKind) {
        let counter = match kind {
            ExitKind::Io => &self.io,
            ExitKind::Mmio => &self.mmio,
            ExitKind::Hypercall => &self.hypercall,
            ExitKind::Msr => &self.msr,
            ExitKind::Other => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now (each read on its own: a snapshot taken while the vCPU runs may mix
    /// counts from either side of an exit).
    pub fn snapshot(&self) -> VmmExits {
        VmmExits {
            io: self.io.load(Ordering::Relaxed),
            mmio: self.mmio.load(Ordering::Relaxed),
            hypercall: self.hypercall.load(Ordering::Relaxed),
            msr: self.msr.load(Ordering::Relaxed),
            other: self.other.load(Ordering::Relaxed),
        }
    }
}

/// Exits that reached pv-vmm, by kind: what `vm.counters` reports as `vmm_exits`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct VmmExits {
    /// Port I/O exits.
    pub io: u64,
    /// MMIO exits.
    pub mmio: u64,
    /// Hypercall exits.
    pub hypercall: u64,
    /// MSR exits.
    pub msr: u64,
    /// Every other exit.
    pub other: u64,
}

impl VmmExits {
    /// The counts by kind's name, for `vm.counters`.
    pub fn entries(self) -> std::collections::BTreeMap<String, u64> {
        [
            ("io", self.io),
            ("mmio", self.mmio),
            ("hypercall", self.hypercall),
            ("msr", self.msr),
            ("other", self.other),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The sum of two counts, kind by kind (saturating).
    pub fn plus(self, other: VmmExits) -> VmmExits {
        VmmExits {
            io: self.io.saturating_add(other.io),
            mmio: self.mmio.saturating_add(other.mmio),
            hypercall: self.hypercall.saturating_add(other.hypercall),
            msr: self.msr.saturating_add(other.msr),
            other: self.other.saturating_add(other.other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_own_counter() {
        let c = ExitCounters::default();
        for _ in 0..3 {
            c.record(ExitKind::Io);
        }
        c.record(ExitKind::Mmio);
        c.record(ExitKind::Other);
        c.record(ExitKind::Other);
        assert_eq!(
            c.snapshot(),
            VmmExits {
                io: 3,
                mmio: 1,
                hypercall: 0,
                msr: 0,
                other: 2
            }
        );
    }

    #[test]
    fn exits_are_classified_by_kvm_exit_reason() {
        let mut data = [0u8; 4];
        assert_eq!(
            ExitKind::of(&VcpuExit::IoIn(0x3f8, &mut data)),
            ExitKind::Io
        );
        assert_eq!(ExitKind::of(&VcpuExit::IoOut(0x80, &data)), ExitKind::Io);
        assert_eq!(
            ExitKind::of(&VcpuExit::MmioRead(0xd000_0000, &mut data)),
            ExitKind::Mmio
        );
        assert_eq!(
            ExitKind::of(&VcpuExit::MmioWrite(0xd000_0000, &data)),
            ExitKind::Mmio
        );
        let mut ret = 0u64;
        let call = kvm_ioctls::HypercallExit {
            nr: 12,
            args: [0; 6],
            ret: &mut ret,
            longmode: 1,
        };
        assert_eq!(
            ExitKind::of(&VcpuExit::Hypercall(call)),
            ExitKind::Hypercall
        );
        for other in [VcpuExit::Hlt, VcpuExit::Shutdown, VcpuExit::Intr] {
            assert_eq!(ExitKind::of(&other), ExitKind::Other);
        }
    }

    #[test]
    fn counters_do_not_share_cache_lines_and_sums_saturate() {
        assert_eq!(std::mem::align_of::<ExitCounters>(), 64);
        let v = [ExitCounters::default(), ExitCounters::default()];
        let gap = std::ptr::addr_of!(v[1]) as usize - std::ptr::addr_of!(v[0]) as usize;
        assert!(gap >= 64, "{gap}");
        let big = VmmExits {
            io: u64::MAX,
            ..VmmExits::default()
        };
        let one = VmmExits {
            io: 1,
            mmio: 2,
            ..VmmExits::default()
        };
        assert_eq!(big.plus(one).io, u64::MAX);
        assert_eq!(big.plus(one).mmio, 2);
    }
}
