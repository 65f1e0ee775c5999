//! The steal-time record (`MSR_KVM_STEAL_TIME`): its layout, decoding the MSR value, and a
//! torn-read-safe reader over guest memory.
//!
//! Source: the kernel's `Documentation/virt/kvm/x86/msr.rst` (MSR_KVM_STEAL_TIME) and
//! `struct kvm_steal_time` in `arch/x86/include/uapi/asm/kvm_para.h`.

use std::mem::{offset_of, size_of};
use std::sync::atomic::{fence, Ordering};

use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

/// The MSR's enable bit.
pub const STEAL_TIME_ENABLE: u64 = 1;
/// The MSR bits KVM reserves (5:1): the record is 64-byte aligned.
pub const STEAL_TIME_RESERVED_MASK: u64 = 0x3e;
/// The record's size and alignment.
pub const STEAL_TIME_RECORD_SIZE: usize = 64;
/// `preempted` bit 0: the vCPU is not running (`KVM_VCPU_PREEMPTED`).
pub const KVM_VCPU_PREEMPTED: u8 = 1 << 0;
/// `preempted` bit 1: flush the TLB at the next VM entry (`KVM_VCPU_FLUSH_TLB`).
pub const KVM_VCPU_FLUSH_TLB: u8 = 1 << 1;
/// How often [`read_snapshot`] retries a record that is being updated.
pub const SNAPSHOT_RETRIES: u32 = 1000;

/// The steal-time record as the guest and the host share it (`struct kvm_steal_time`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StealTimeRecord {
    /// Nanoseconds the vCPU was runnable but not running.
    pub steal: u64,
    /// Odd while the host updates the record.
    pub version: u32,
    /// Reserved flags, 0 today.
    pub flags: u32,
    /// [`KVM_VCPU_PREEMPTED`] and [`KVM_VCPU_FLUSH_TLB`].
    pub preempted: u8,
    /// Padding to the next u32.
    pub u8_pad: [u8; 3],
    /// Padding to 64 bytes.
    pub pad: [u32; 11],
}

const _: () = {
    assert!(size_of::<StealTimeRecord>() == STEAL_TIME_RECORD_SIZE);
    assert!(offset_of!(StealTimeRecord, steal) == 0);
    assert!(offset_of!(StealTimeRecord, version) == 8);
    assert!(offset_of!(StealTimeRecord, flags) == 12);
    assert!(offset_of!(StealTimeRecord, preempted) == 16);
    assert!(offset_of!(StealTimeRecord, pad) == 20);
};

// SAFETY: `StealTimeRecord` is `repr(C)`, made only of integers and integer arrays, with no
// implicit padding (asserted above), so every byte pattern is a valid value.
unsafe impl vm_memory::ByteValued for StealTimeRecord {}

/// Errors of decoding the MSR value and reading the record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StealTimeError {
    /// Bits 5:1 are reserved: the record address must be 64-byte aligned.
    #[error("steal-time MSR value {value:#x} sets reserved bits {:#x} (5:1): the record must be 64-byte aligned", value & STEAL_TIME_RESERVED_MASK)]
    ReservedBits {
        /// The MSR value.
        value: u64,
    },
    /// The address has bits above the guest's physical address width.
    #[error("steal-time record address {gpa:#x} exceeds the guest's {phys_bits}-bit physical address width")]
    AddressTooWide {
        /// The record's guest-physical address.
        gpa: u64,
        /// The guest's physical address width.
        phys_bits: u8,
    },
    /// The record does not lie inside guest memory.
    #[error("steal-time record at {gpa:#x} is not inside guest memory")]
    OutsideGuestMemory {
        /// The record's guest-physical address.
        gpa: u64,
    },
    /// Reading guest memory failed.
    #[error("reading the steal-time record at {gpa:#x}: {message}")]
    Read {
        /// The record's guest-physical address.
        gpa: u64,
        /// The memory error.
        message: String,
    },
    /// The host kept updating the record while it was read.
    #[error("steal-time record at {gpa:#x} stayed in update after {tries} reads")]
    Unstable {
        /// The record's guest-physical address.
        gpa: u64,
        /// How many reads were tried.
        tries: u32,
    },
}

/// A decoded `MSR_KVM_STEAL_TIME` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StealTimeMsr {
    /// Bit 0 clear: steal time is off for the vCPU.
    Disabled,
    /// Steal time is on, with the record at this guest-physical address.
    Enabled {
        /// The record's guest-physical address (64-byte aligned).
        gpa: u64,
    },
}

impl StealTimeMsr {
    /// Decodes an MSR value: bits 5:1 must be clear (KVM refuses such a write with #GP,
    /// `KVM_STEAL_RESERVED_MASK`); the address must fit in `phys_bits` (the guest's
    /// MAXPHYADDR, at most 52 on x86). KVM itself takes an address past that width (or
    /// outside every memslot) and then never fills the record (`record_steal_time` finds no
    /// mapping), so [`StealTimeError::AddressTooWide`] describes a record that cannot be
    /// updated, not a write the guest was refused. With bit 0 clear the value is
    /// [`StealTimeMsr::Disabled`] whatever the address.
    pub fn decode(value: u64, phys_bits: u8) -> Result<Self, StealTimeError> {
        if value & STEAL_TIME_RESERVED_MASK != 0 {
            return Err(StealTimeError::ReservedBits { value });
        }
        if value & STEAL_TIME_ENABLE == 0 {
            return Ok(StealTimeMsr::Disabled);
        }
        let gpa = value & !(STEAL_TIME_RECORD_SIZE as u64 - 1);
        if phys_bits < 64 && gpa >> phys_bits != 0 {
            return Err(StealTimeError::AddressTooWide { gpa, phys_bits });
        }
        Ok(StealTimeMsr::Enabled { gpa })
    }

    /// The MSR value that enables the record at `gpa`, or the reason `gpa` is not a valid
    /// record address.
    pub fn encode(gpa: u64) -> Result<u64, StealTimeError> {
        if gpa & (STEAL_TIME_RECORD_SIZE as u64 - 1) != 0 {
            return Err(StealTimeError::ReservedBits {
                value: gpa | STEAL_TIME_ENABLE,
            });
        }
        Ok(gpa | STEAL_TIME_ENABLE)
    }

    /// The record's address, checked to lie wholly inside `mem`; `None` when disabled.
    pub fn locate<M: GuestMemory + ?Sized>(
        self,
        mem: &M,
    ) -> Result<Option<GuestAddress>, StealTimeError> {
        match self {
            StealTimeMsr::Disabled => Ok(None),
            StealTimeMsr::Enabled { gpa } => {
                let addr = GuestAddress(gpa);
                if mem.check_range(addr, STEAL_TIME_RECORD_SIZE, Permissions::Read) {
                    Ok(Some(addr))
                } else {
                    Err(StealTimeError::OutsideGuestMemory { gpa })
                }
            }
        }
    }
}

/// A consistent view of one steal-time record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StealTimeSnapshot {
    /// Nanoseconds the vCPU was runnable but not running.
    pub steal_ns: u64,
    /// The record's (even) version.
    pub version: u32,
    /// The raw `preempted` byte.
    pub preempted_raw: u8,
    /// The vCPU was scheduled out ([`KVM_VCPU_PREEMPTED`]).
    pub preempted: bool,
    /// A remote TLB flush waits for the next VM entry ([`KVM_VCPU_FLUSH_TLB`]).
    pub flush_tlb: bool,
}

/// Reads the record at `gpa` consistently: retries while the version is odd (the host is
/// mid-update) or changed during the read, at most [`SNAPSHOT_RETRIES`] times. Every access
/// goes through vm-memory's atomic accessors; the record must lie inside `mem`.
pub fn read_snapshot<M: GuestMemory + ?Sized>(
    mem: &M,
    gpa: GuestAddress,
) -> Result<StealTimeSnapshot, StealTimeError> {
    let field = |offset: usize| {
        gpa.0
            .checked_add(offset as u64)
            .map(GuestAddress)
            .ok_or(StealTimeError::OutsideGuestMemory { gpa: gpa.0 })
    };
    let version_at = field(offset_of!(StealTimeRecord, version))?;
    let steal_at = field(offset_of!(StealTimeRecord, steal))?;
    let preempted_at = field(offset_of!(StealTimeRecord, preempted))?;
    if !mem.check_range(gpa, STEAL_TIME_RECORD_SIZE, Permissions::Read) {
        return Err(StealTimeError::OutsideGuestMemory { gpa: gpa.0 });
    }
    let read_err = |e: vm_memory::GuestMemoryError| StealTimeError::Read {
        gpa: gpa.0,
        message: e.to_string(),
    };
    for _ in 0..SNAPSHOT_RETRIES {
        let before: u32 = mem.load(version_at, Ordering::Acquire).map_err(read_err)?;
        if before & 1 == 0 {
            let steal_ns: u64 = mem.load(steal_at, Ordering::Relaxed).map_err(read_err)?;
            let preempted_raw: u8 = mem
                .load(preempted_at, Ordering::Relaxed)
                .map_err(read_err)?;
            // Order the field reads before the second version read (seqlock reader side).
            fence(Ordering::Acquire);
            let after: u32 = mem.load(version_at, Ordering::Relaxed).map_err(read_err)?;
            if after == before {
                return Ok(StealTimeSnapshot {
                    steal_ns,
                    version: before,
                    preempted_raw,
                    preempted: preempted_raw & KVM_VCPU_PREEMPTED != 0,
                    flush_tlb: preempted_raw & KVM_VCPU_FLUSH_TLB != 0,
                });
            }
        }
        std::hint::spin_loop();
    }
    Err(StealTimeError::Unstable {
        gpa: gpa.0,
        tries: SNAPSHOT_RETRIES,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    const MEM_SIZE: usize = 0x10000;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory")
    }

    #[test]
    fn decode_valid_values() {
        assert_eq!(StealTimeMsr::decode(0, 46), Ok(StealTimeMsr::Disabled));
        assert_eq!(
            StealTimeMsr::decode(0x1000, 46),
            Ok(StealTimeMsr::Disabled),
            "an address without the enable bit is still disabled"
        );
        assert_eq!(
            StealTimeMsr::decode(0x1041, 46),
            Ok(StealTimeMsr::Enabled { gpa: 0x1040 })
        );
        assert_eq!(
            StealTimeMsr::decode((1 << 45) | 1, 46),
            Ok(StealTimeMsr::Enabled { gpa: 1 << 45 })
        );
    }

    #[test]
    fn decode_rejects_reserved_bits() {
        for bit in 1..=5 {
            let value = 0x1000 | 1 | (1 << bit);
            assert_eq!(
                StealTimeMsr::decode(value, 46),
                Err(StealTimeError::ReservedBits { value }),
                "bit {bit}"
            );
        }
        let err = StealTimeMsr::decode(0x1003, 46).expect_err("bit 1 reserved");
        assert_eq!(
            err.to_string(),
            "steal-time MSR value 0x1003 sets reserved bits 0x2 (5:1): the record must be 64-byte aligned"
        );
        // Reserved bits are checked even when disabled, as KVM does.
        assert!(StealTimeMsr::decode(0x20, 46).is_err());
    }

    #[test]
    fn decode_rejects_wide_addresses() {
        assert_eq!(
            StealTimeMsr::decode((1 << 46) | 1, 46),
            Err(StealTimeError::AddressTooWide {
                gpa: 1 << 46,
                phys_bits: 46
            })
        );
        assert!(StealTimeMsr::decode(!0x3e_u64, 52).is_err());
        assert!(StealTimeMsr::decode(!0x3e_u64, 64).is_ok());
    }

    #[test]
    fn encode_round_trips_and_rejects_misaligned() {
        let value = StealTimeMsr::encode(0x2040).expect("aligned");
        assert_eq!(value, 0x2041);
        assert_eq!(
            StealTimeMsr::decode(value, 46),
            Ok(StealTimeMsr::Enabled { gpa: 0x2040 })
        );
        assert!(StealTimeMsr::encode(0x2010).is_err());
        assert!(StealTimeMsr::encode(0x2001).is_err());
    }

    #[test]
    fn locate_checks_guest_memory() {
        let mem = memory();
        assert_eq!(StealTimeMsr::Disabled.locate(&mem), Ok(None));
        let inside = StealTimeMsr::Enabled {
            gpa: (MEM_SIZE - 64) as u64,
        };
        assert_eq!(
            inside.locate(&mem),
            Ok(Some(GuestAddress((MEM_SIZE - 64) as u64)))
        );
        let outside = StealTimeMsr::Enabled {
            gpa: MEM_SIZE as u64,
        };
        assert_eq!(
            outside.locate(&mem),
            Err(StealTimeError::OutsideGuestMemory {
                gpa: MEM_SIZE as u64
            })
        );
        let far = StealTimeMsr::Enabled { gpa: !0x3f_u64 };
        assert!(far.locate(&mem).is_err());
    }

    #[test]
    fn snapshot_reads_fields() {
        let mem = memory();
        let record = StealTimeRecord {
            steal: 123_456_789,
            version: 4,
            preempted: KVM_VCPU_PREEMPTED | KVM_VCPU_FLUSH_TLB,
            ..Default::default()
        };
        mem.write_obj(record, GuestAddress(0x1000)).expect("write");
        let snap = read_snapshot(&mem, GuestAddress(0x1000)).expect("stable record");
        assert_eq!(
            snap,
            StealTimeSnapshot {
                steal_ns: 123_456_789,
                version: 4,
                preempted_raw: 3,
                preempted: true,
                flush_tlb: true,
            }
        );
        mem.write_obj(1u8, GuestAddress(0x1010)).expect("write");
        let snap = read_snapshot(&mem, GuestAddress(0x1000)).expect("stable record");
        assert!(snap.preempted && !snap.flush_tlb);
    }

    #[test]
    fn snapshot_gives_up_on_odd_version() {
        let mem = memory();
        let record = StealTimeRecord {
            version: 7,
            ..Default::default()
        };
        mem.write_obj(record, GuestAddress(0x40)).expect("write");
        assert_eq!(
            read_snapshot(&mem, GuestAddress(0x40)),
            Err(StealTimeError::Unstable {
                gpa: 0x40,
                tries: SNAPSHOT_RETRIES
            })
        );
    }

    #[test]
    fn snapshot_rejects_outside_memory() {
        let mem = memory();
        for gpa in [MEM_SIZE as u64 - 32, MEM_SIZE as u64, u64::MAX - 8] {
            assert_eq!(
                read_snapshot(&mem, GuestAddress(gpa)),
                Err(StealTimeError::OutsideGuestMemory { gpa })
            );
        }
    }

    #[test]
    fn snapshot_is_consistent_under_concurrent_updates() {
        // A writer thread updates the record as KVM does (version odd, fields, version even);
        // every snapshot must see steal == version * 1000 for the version it reports.
        let mem = std::sync::Arc::new(memory());
        let at = GuestAddress(0x2000);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let mem = mem.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut version = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    version = version.wrapping_add(1);
                    mem.store(version, GuestAddress(0x2008), Ordering::Relaxed)
                        .expect("store");
                    fence(Ordering::Release);
                    mem.store(u64::from(version + 1) * 1000, at, Ordering::Relaxed)
                        .expect("store");
                    version = version.wrapping_add(1);
                    mem.store(version, GuestAddress(0x2008), Ordering::Release)
                        .expect("store");
                }
            })
        };
        let mut seen = 0;
        for _ in 0..20_000 {
            if let Ok(snap) = read_snapshot(&*mem, at) {
                assert_eq!(snap.version % 2, 0);
                if snap.version > 0 {
                    assert_eq!(snap.steal_ns, u64::from(snap.version) * 1000);
                }
                seen += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer");
        assert!(seen > 0, "no snapshot succeeded");
    }
}
