//! The PV counters a VMM reports: each vCPU's steal-time record (found through its
//! `MSR_KVM_STEAL_TIME`) and the KVM statistics that show each PV feature, in Cloud
//! Hypervisor's `vm.counters` shape (an object of objects of integers).
//!
//! The steal-time MSR: KVM handles the guest's write of `MSR_KVM_STEAL_TIME` in the kernel,
//! so the VMM never sees it, and `KVM_GET_MSRS` on a vCPU waits for the vCPU's mutex, which
//! `KVM_RUN` holds while the guest runs. So the vCPU's own thread reads it: the VMM calls
//! [`MsrSlot::request`] and kicks the thread out of `KVM_RUN` (a signal); the thread calls
//! [`MsrSlot::serve`] at every turn of its run loop, which reads the MSR when asked; the
//! VMM collects the value with [`MsrSlot::answer`]. While the vCPUs are paused the VMM may
//! read it directly with [`read_steal_msr`].
//!
//! **Cloud Hypervisor:** `vmm/src/cpu.rs` keeps an [`MsrSlot`] per vCPU; its vCPU loop calls
//! [`MsrSlot::serve`]; `vm.counters` (`vmm/src/vm.rs`, `Vm::counters`) adds an entry per
//! vCPU ([`vcpu_key`], [`vcpu_entries`]) and one for the VM ([`VM_KEY`], [`vm_entries`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;
use pv_features::msrs::MSR_KVM_STEAL_TIME;
use pv_features::stats::Stats;
use pv_features::steal_time::{read_snapshot, StealTimeMsr, StealTimeSnapshot};
use serde::Serialize;
use vm_memory::{Address, GuestMemory};

/// The vCPU statistics `vm.counters` reports: those that show halt polling and disabled
/// HLT exits (`halt_*`, `exits`), PV send-IPI (`hypercalls`), preemption as the steal-time
/// record reports it (`preemption_*`), PV sched yield (`directed_yield_*`) and TLB flushes.
/// A name the host's KVM does not have is left out.
pub const VCPU_STATS: &[&str] = &[
    "exits",
    "halt_exits",
    "halt_successful_poll",
    "halt_attempted_poll",
    "halt_poll_invalid",
    "halt_wakeup",
    "halt_poll_success_ns",
    "halt_poll_fail_ns",
    "halt_wait_ns",
    "hypercalls",
    "preemption_reported",
    "preemption_other",
    "directed_yield_attempted",
    "directed_yield_successful",
    "tlb_flush",
    "irq_exits",
    "io_exits",
    "mmio_exits",
    "signal_exits",
    "irq_injections",
];

/// The VM statistics `vm.counters` reports: remote TLB flushes (what PV TLB shootdown saves).
pub const VM_STATS: &[&str] = &["remote_tlb_flush", "remote_tlb_flush_requests"];

/// The `vm.counters` key of the VM's KVM statistics.
pub const VM_KEY: &str = "kvm_vm";

/// The `vm.counters` key of vCPU `id`'s PV counters.
pub fn vcpu_key(id: u32) -> String {
    format!("kvm_vcpu{id}")
}

/// One vCPU's answer to a steal-time MSR read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsrRead {
    /// The MSR's value.
    Value(u64),
    /// `KVM_GET_MSRS` refused it (KVM does so when the vCPU's CPUID lacks steal time and PV
    /// CPUID enforcement is on).
    Refused,
    /// The thread did not answer in time (or has ended).
    NoAnswer,
}

/// A request for one [`MsrSlot`] read, to collect with [`MsrSlot::answer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsrTicket(u64);

/// The steal-time MSR of one vCPU, read on the vCPU's thread when the VMM asks.
#[derive(Debug, Default)]
pub struct MsrSlot {
    want: AtomicBool,
    value: AtomicU64,
    ok: AtomicBool,
    seq: AtomicU64,
}

impl MsrSlot {
    /// Asks the vCPU's thread for the MSR; then kick the thread out of `KVM_RUN`.
    pub fn request(&self) -> MsrTicket {
        let ticket = MsrTicket(self.seq.load(Ordering::Acquire));
        self.want.store(true, Ordering::Release);
        ticket
    }

    /// Whether a read is wanted (cheap: call it at every turn of the vCPU loop and take
    /// the vCPU's lock for [`MsrSlot::serve`] only when it says so).
    pub fn wanted(&self) -> bool {
        self.want.load(Ordering::Acquire)
    }

    /// On the vCPU's own thread, outside `KVM_RUN`: reads the MSR if asked.
    pub fn serve(&self, vcpu: &VcpuFd) {
        if !self.want.swap(false, Ordering::AcqRel) {
            return;
        }
        let value = read_steal_msr(vcpu);
        self.value.store(value.unwrap_or(0), Ordering::Release);
        self.ok.store(value.is_some(), Ordering::Release);
        self.seq.fetch_add(1, Ordering::AcqRel);
    }

    /// The answer to `ticket`, or `None` while the thread has not read the MSR since.
    pub fn answer(&self, ticket: MsrTicket) -> Option<MsrRead> {
        if self.seq.load(Ordering::Acquire) <= ticket.0 {
            return None;
        }
        Some(if self.ok.load(Ordering::Acquire) {
            MsrRead::Value(self.value.load(Ordering::Acquire))
        } else {
            MsrRead::Refused
        })
    }
}

/// Reads `MSR_KVM_STEAL_TIME` of `vcpu` (on its own thread, or while it is paused); `None`
/// when KVM refuses it.
pub fn read_steal_msr(vcpu: &VcpuFd) -> Option<u64> {
    let entry = kvm_msr_entry {
        index: MSR_KVM_STEAL_TIME,
        ..Default::default()
    };
    let mut msrs = Msrs::from_entries(&[entry]).ok()?;
    match vcpu.get_msrs(&mut msrs) {
        Ok(1) => msrs.as_slice().first().map(|e| e.data),
        _ => None,
    }
}

/// A vCPU's steal-time record, as found through its `MSR_KVM_STEAL_TIME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum StealTime {
    /// This VM does not advertise `steal_time`: there is no record to read (and KVM
    /// refuses the MSR under PV CPUID enforcement).
    NotAdvertised,
    /// The guest has not enabled steal time on this vCPU (MSR bit 0 clear).
    Disabled {
        /// The MSR value.
        msr: u64,
    },
    /// The record, read consistently from guest memory.
    Enabled {
        /// The MSR value.
        msr: u64,
        /// The record's guest-physical address.
        gpa: u64,
        /// Steal ns, version and the preempted byte.
        record: StealTimeSnapshot,
    },
    /// The guest enabled steal time at a value that locates no readable record (outside
    /// guest memory, beyond its physical address width, or a record that never settles).
    /// KVM accepts such values and writes no record; this reports it.
    Invalid {
        /// The MSR value.
        msr: u64,
        /// What is wrong with it.
        error: String,
    },
    /// The MSR could not be read.
    Unknown {
        /// Why.
        reason: String,
    },
}

impl StealTime {
    /// The record a vCPU's MSR read locates in `mem` (guest RAM; `phys_bits` is the
    /// guest's MAXPHYADDR). `advertised`: the VM offers `steal_time`. Whatever the guest
    /// wrote into the MSR, the answer is a report, never an error.
    pub fn from_read<M: GuestMemory + ?Sized>(
        advertised: bool,
        read: MsrRead,
        phys_bits: u8,
        mem: &M,
    ) -> Self {
        let msr = match read {
            _ if !advertised => return StealTime::NotAdvertised,
            MsrRead::NoAnswer => {
                return StealTime::Unknown {
                    reason: "the vCPU thread did not answer the MSR read".to_owned(),
                }
            }
            MsrRead::Refused => {
                return StealTime::Unknown {
                    reason: "KVM_GET_MSRS refused MSR_KVM_STEAL_TIME (steal time is not in this vCPU's CPUID)".to_owned(),
                }
            }
            MsrRead::Value(msr) => msr,
        };
        let invalid = |error: String| StealTime::Invalid { msr, error };
        match StealTimeMsr::decode(msr, phys_bits).and_then(|m| m.locate(mem)) {
            Ok(None) => StealTime::Disabled { msr },
            Ok(Some(gpa)) => match read_snapshot(mem, gpa) {
                Ok(record) => StealTime::Enabled {
                    msr,
                    gpa: gpa.raw_value(),
                    record,
                },
                Err(e) => invalid(e.to_string()),
            },
            Err(e) => invalid(e.to_string()),
        }
    }

    /// The entries this report adds to a vCPU's `vm.counters` object:
    /// `steal_time_enabled` (0 or 1) always, and for an enabled record `steal_time_ns`,
    /// `steal_time_version` and `steal_time_preempted` (the flag now, 0 or 1).
    pub fn counter_entries(&self) -> Vec<(&'static str, u64)> {
        match self {
            StealTime::Enabled { record, .. } => vec![
                ("steal_time_enabled", 1),
                ("steal_time_ns", record.steal_ns),
                ("steal_time_version", u64::from(record.version)),
                ("steal_time_preempted", u64::from(record.preempted)),
            ],
            _ => vec![("steal_time_enabled", 0)],
        }
    }
}

/// The scalar statistics of `stats` among `names`, in `names`' order (a histogram or a
/// name the file lacks is left out).
pub fn stats_entries(stats: &Stats, names: &'static [&'static str]) -> Vec<(&'static str, u64)> {
    names
        .iter()
        .filter_map(|name| match stats.get_all(name) {
            Some([value]) => Some((*name, *value)),
            _ => None,
        })
        .collect()
}

/// A vCPU's `vm.counters` object: its [`VCPU_STATS`] (where the host has binary
/// statistics) and its steal-time entries.
pub fn vcpu_entries(stats: Option<&Stats>, steal: &StealTime) -> Vec<(&'static str, u64)> {
    let mut entries = stats.map_or_else(Vec::new, |s| stats_entries(s, VCPU_STATS));
    entries.extend(steal.counter_entries());
    entries
}

/// The VM's `vm.counters` object: its [`VM_STATS`].
pub fn vm_entries(stats: &Stats) -> Vec<(&'static str, u64)> {
    stats_entries(stats, VM_STATS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("guest memory")
    }

    fn stats(values: &[(&str, &[u64])]) -> Stats {
        Stats {
            values: values
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
                .collect(),
        }
    }

    #[test]
    fn slot_answers_only_after_a_serve() {
        let slot = MsrSlot::default();
        assert!(!slot.wanted());
        let ticket = slot.request();
        assert!(slot.wanted());
        assert_eq!(
            slot.answer(ticket),
            None,
            "no answer before the thread read"
        );
        // What serve() records, without a vCPU: a refused read.
        slot.want.store(false, Ordering::Release);
        slot.ok.store(false, Ordering::Release);
        slot.seq.fetch_add(1, Ordering::AcqRel);
        assert_eq!(slot.answer(ticket), Some(MsrRead::Refused));
        // A later request waits for a later read.
        let next = slot.request();
        assert_eq!(slot.answer(next), None);
        slot.value.store(0x2001, Ordering::Release);
        slot.ok.store(true, Ordering::Release);
        slot.seq.fetch_add(1, Ordering::AcqRel);
        assert_eq!(slot.answer(next), Some(MsrRead::Value(0x2001)));
    }

    #[test]
    fn steal_time_reports_every_kind_of_msr() {
        let mem = memory();
        mem.write_obj(1234u64, GuestAddress(0x2000)).expect("steal");
        mem.write_obj(4u32, GuestAddress(0x2008)).expect("version");
        assert_eq!(
            StealTime::from_read(false, MsrRead::Value(0x2001), 40, &mem),
            StealTime::NotAdvertised
        );
        assert!(matches!(
            StealTime::from_read(true, MsrRead::NoAnswer, 40, &mem),
            StealTime::Unknown { .. }
        ));
        assert!(matches!(
            StealTime::from_read(true, MsrRead::Refused, 40, &mem),
            StealTime::Unknown { .. }
        ));
        assert_eq!(
            StealTime::from_read(true, MsrRead::Value(0x2000), 40, &mem),
            StealTime::Disabled { msr: 0x2000 }
        );
        match StealTime::from_read(true, MsrRead::Value(0x2001), 40, &mem) {
            StealTime::Enabled { gpa, record, .. } => {
                assert_eq!(gpa, 0x2000);
                assert_eq!(record.steal_ns, 1234);
                assert_eq!(record.version, 4);
            }
            other => panic!("enabled record expected, got {other:?}"),
        }
        // Reserved bits, beyond MAXPHYADDR, outside guest memory: reports, not errors.
        for msr in [0x2003, 1 << 45 | 1, 0x100_0001] {
            assert!(
                matches!(
                    StealTime::from_read(true, MsrRead::Value(msr), 40, &mem),
                    StealTime::Invalid { .. }
                ),
                "MSR {msr:#x}"
            );
        }
    }

    #[test]
    fn counter_entries_follow_the_record() {
        let mem = memory();
        mem.write_obj(5_000u64, GuestAddress(0x2000))
            .expect("steal");
        mem.write_obj(1u8, GuestAddress(0x2000 + 16))
            .expect("preempted");
        let on = StealTime::from_read(true, MsrRead::Value(0x2001), 40, &mem);
        assert_eq!(
            on.counter_entries(),
            vec![
                ("steal_time_enabled", 1),
                ("steal_time_ns", 5_000),
                ("steal_time_version", 0),
                ("steal_time_preempted", 1),
            ]
        );
        assert_eq!(
            StealTime::NotAdvertised.counter_entries(),
            vec![("steal_time_enabled", 0)]
        );
    }

    #[test]
    fn stats_entries_keep_known_scalars_only() {
        let s = stats(&[
            ("halt_exits", &[7]),
            ("halt_poll_success_hist", &[1, 2, 3]),
            ("not_ours", &[9]),
            ("hypercalls", &[3]),
        ]);
        assert_eq!(
            vcpu_entries(Some(&s), &StealTime::NotAdvertised),
            vec![
                ("halt_exits", 7),
                ("hypercalls", 3),
                ("steal_time_enabled", 0)
            ]
        );
        assert_eq!(
            vcpu_entries(None, &StealTime::NotAdvertised),
            vec![("steal_time_enabled", 0)]
        );
        let vm = stats(&[("remote_tlb_flush", &[11]), ("pages_4k", &[100])]);
        assert_eq!(vm_entries(&vm), vec![("remote_tlb_flush", 11)]);
    }

    #[test]
    fn keys_do_not_collide() {
        assert_eq!(vcpu_key(0), "kvm_vcpu0");
        assert_eq!(vcpu_key(17), "kvm_vcpu17");
        assert_ne!(vcpu_key(0), VM_KEY);
    }
}
