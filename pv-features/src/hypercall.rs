//! KVM hypercalls: numbers, return codes, decoding SEND_IPI into destinations, and a
//! dispatcher that turns a hypercall exit into a typed action or a guest-visible error.
//!
//! Source: the kernel's `Documentation/virt/kvm/x86/hypercalls.rst`,
//! `include/uapi/linux/kvm_para.h`, and `kvm_pv_send_ipi()` / `kvm_emulate_hypercall()` in
//! `arch/x86/kvm/`. KVM handles KICK_CPU, SEND_IPI and SCHED_YIELD in the kernel when the
//! local APIC is in-kernel; only MAP_GPA_RANGE (with `KVM_CAP_EXIT_HYPERCALL`) reaches user
//! space there. The dispatcher decodes all of them with KVM's semantics (x86.c's
//! `____kvm_emulate_hypercall`, `kvm_pv_kick_cpu_op`) so that a VMM handling them itself
//! (or tracing them) gets the same answers: VAPIC_POLL_IRQ returns 0, a KICK_CPU to APIC id
//! 0xff wakes every vCPU (KVM delivers its REMRD interrupt to the xAPIC broadcast id), a
//! MAP_GPA_RANGE's result reaches the guest only when the VMM has done the conversion.
//! What it cannot see: the caller's CPL (KVM answers a hypercall from CPL > 0 with
//! `-KVM_EPERM`; a VMM gets the exit only for CPL-0 calls).

use kvm_ioctls::HypercallExit;
use serde::{Deserialize, Serialize};

use crate::cpuid::KvmFeatures;

/// Poll for a pending virtual-APIC interrupt (`KVM_HC_VAPIC_POLL_IRQ`): KVM answers 0.
pub const KVM_HC_VAPIC_POLL_IRQ: u64 = 1;
/// The xAPIC broadcast id: a KICK_CPU to it wakes every vCPU, as KVM delivers it.
pub const APIC_BROADCAST: u64 = 0xff;
/// Kick a halted vCPU (PV spinlocks) (`KVM_HC_KICK_CPU`).
pub const KVM_HC_KICK_CPU: u64 = 5;
/// Host/guest clock pairing (`KVM_HC_CLOCK_PAIRING`).
pub const KVM_HC_CLOCK_PAIRING: u64 = 9;
/// Send an IPI to up to 128 vCPUs (`KVM_HC_SEND_IPI`).
pub const KVM_HC_SEND_IPI: u64 = 10;
/// Yield to a preempted vCPU (`KVM_HC_SCHED_YIELD`).
pub const KVM_HC_SCHED_YIELD: u64 = 11;
/// Change the encryption attribute of a GPA range (`KVM_HC_MAP_GPA_RANGE`).
pub const KVM_HC_MAP_GPA_RANGE: u64 = 12;

/// Unknown or unavailable hypercall (`KVM_ENOSYS`).
pub const KVM_ENOSYS: i64 = 1000;
/// Invalid argument (`KVM_EINVAL`).
pub const KVM_EINVAL: i64 = 22;
/// Not supported (`KVM_EOPNOTSUPP`), e.g. SEND_IPI without an APIC map.
pub const KVM_EOPNOTSUPP: i64 = 95;

/// ICR bit 11: logical destination mode (`APIC_DEST_LOGICAL`).
const ICR_DEST_LOGICAL: u64 = 1 << 11;
/// ICR bits 19:18: destination shorthand (`APIC_SHORT_MASK`).
const ICR_SHORTHAND_MASK: u64 = 0b11 << 18;
/// ICR bits 10:8: delivery mode (`APIC_MODE_MASK`).
const ICR_MODE_SHIFT: u32 = 8;
/// ICR bit 14: level assert (`APIC_INT_ASSERT`).
const ICR_LEVEL_ASSERT: u64 = 1 << 14;
/// ICR bit 15: level triggered (`APIC_INT_LEVELTRIG`).
const ICR_LEVEL_TRIGGER: u64 = 1 << 15;

/// MAP_GPA_RANGE attribute bits 1:0: page size (0 = 4K, 1 = 2M, 2 = 1G).
pub const KVM_MAP_GPA_RANGE_PAGE_SZ_MASK: u64 = 0b11;
/// MAP_GPA_RANGE attribute bit 4: encrypted (clear = decrypted).
pub const KVM_MAP_GPA_RANGE_ENCRYPTED: u64 = 1 << 4;
const PAGE_SHIFT: u32 = 12;

/// A hypercall as the vCPU made it: number, arguments (RBX, RCX, RDX, RSI for a0..a3) and
/// whether it came from 64-bit mode (otherwise KVM truncates everything to 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hypercall {
    /// The hypercall number (RAX).
    pub nr: u64,
    /// The arguments.
    pub args: [u64; 6],
    /// Made in 64-bit mode.
    pub long_mode: bool,
}

impl Hypercall {
    /// The hypercall of a `KVM_EXIT_HYPERCALL` exit.
    pub fn from_exit(exit: &HypercallExit<'_>) -> Self {
        Self {
            nr: exit.nr,
            args: exit.args,
            long_mode: exit.longmode != 0,
        }
    }

    /// Argument `i`, truncated to 32 bits outside 64-bit mode as KVM does.
    fn arg(&self, i: usize) -> u64 {
        let value = self.args.get(i).copied().unwrap_or(0);
        if self.long_mode {
            value
        } else {
            value & u64::from(u32::MAX)
        }
    }
}

/// The RAX value the guest sees for a hypercall result: sign-extended in 64-bit mode,
/// truncated to 32 bits otherwise.
pub fn guest_return_value(result: i64, long_mode: bool) -> u64 {
    if long_mode {
        result as u64
    } else {
        u64::from(result as u32)
    }
}

/// The destinations of a SEND_IPI: two bitmap words relative to the lowest APIC id.
/// Fixed size, iterated without allocation.
///
/// As in KVM's `kvm_pv_send_ipi()`, the lowest id is a `u32` and the high word's first id
/// is `min + cluster` computed in `u32`, so it wraps around: with `min = 2^32 - 64` in
/// 64-bit mode, bit 0 of the high word names APIC 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApicIdSet {
    /// The APIC id of bit 0 of `low`.
    pub min: u32,
    /// Bitmap of `min + i`.
    pub low: u64,
    /// Bitmap of `min + cluster + i` (the base wrapping at 2^32).
    pub high: u64,
    /// Bits per bitmap word: 64 in 64-bit mode, 32 otherwise.
    pub cluster: u32,
}

impl ApicIdSet {
    /// The destination APIC ids, low word first, each word's in ascending order. Ids past
    /// `u32::MAX` within a word are not destinations (KVM stops each word at the highest
    /// APIC id, which is far below).
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words().into_iter().flat_map(move |(word, base)| {
            // Visit only the set bits: lowest first, clearing each as it is taken.
            let mut rest = word;
            std::iter::from_fn(move || {
                let bit = u64::from(rest.trailing_zeros());
                rest &= rest.wrapping_sub(1);
                (bit < 64).then_some(bit)
            })
            .filter_map(move |bit| u32::try_from(u64::from(base) + bit).ok())
        })
    }

    /// The destinations that exist in a VM whose highest APIC id is `max_apic_id`: KVM
    /// delivers to those and skips the rest.
    pub fn deliverable(&self, max_apic_id: u32) -> impl Iterator<Item = u32> + '_ {
        self.iter().filter(move |id| *id <= max_apic_id)
    }

    /// How many of [`ApicIdSet::deliverable`] there are, without iterating.
    pub fn count_deliverable(&self, max_apic_id: u32) -> u32 {
        self.words()
            .into_iter()
            .map(|(word, base)| {
                // Bits 0..=(max_apic_id - base) name existing APICs.
                match max_apic_id.checked_sub(base) {
                    None => 0,
                    Some(last) if last >= 63 => word.count_ones(),
                    Some(last) => (word & ((2u64 << last) - 1)).count_ones(),
                }
            })
            .sum()
    }

    /// The two words, masked to `cluster` bits, with the APIC id of their bit 0.
    fn words(&self) -> [(u64, u32); 2] {
        let mask = if self.cluster >= 64 {
            u64::MAX
        } else {
            (1u64 << self.cluster) - 1
        };
        [
            (self.low & mask, self.min),
            (
                self.high & mask,
                self.min.wrapping_add(self.cluster.min(64)),
            ),
        ]
    }

    /// How many destinations the bitmaps name.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// True when the bitmaps name no destination.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A decoded SEND_IPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendIpi {
    /// The interrupt vector (ICR bits 7:0).
    pub vector: u8,
    /// The delivery mode (ICR bits 10:8: 0 fixed, 1 lowest priority, 2 SMI, 4 NMI, 5 INIT,
    /// 6 SIPI, 7 ExtINT).
    pub delivery_mode: u8,
    /// Level assert (ICR bit 14).
    pub level: bool,
    /// Level triggered (ICR bit 15).
    pub level_triggered: bool,
    /// The destination APIC ids.
    pub destinations: ApicIdSet,
}

/// Decodes SEND_IPI arguments (a0 low bitmap, a1 high bitmap, a2 lowest APIC id, a3 ICR) as
/// KVM does: logical destination mode and shorthands are invalid; in 32-bit mode each
/// bitmap word has 32 bits and all arguments are truncated to 32 bits; in 64-bit mode the
/// lowest APIC id still keeps only its low 32 bits (KVM's `kvm_pv_send_ipi()` takes a
/// `u32 min`, so `2^32` means APIC 0, not an error).
pub fn decode_send_ipi(call: &Hypercall) -> Result<SendIpi, GuestError> {
    let icr = call.arg(3);
    if icr & (ICR_DEST_LOGICAL | ICR_SHORTHAND_MASK) != 0 {
        return Err(GuestError::InvalidArgument);
    }
    // Truncation, as KVM's u32 parameter does.
    let min = call.arg(2) as u32;
    Ok(SendIpi {
        vector: (icr & 0xff) as u8,
        delivery_mode: ((icr >> ICR_MODE_SHIFT) & 0b111) as u8,
        level: icr & ICR_LEVEL_ASSERT != 0,
        level_triggered: icr & ICR_LEVEL_TRIGGER != 0,
        destinations: ApicIdSet {
            min,
            low: call.arg(0),
            high: call.arg(1),
            cluster: if call.long_mode { 64 } else { 32 },
        },
    })
}

/// What a hypercall asks the VMM to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HypercallAction {
    /// Deliver an IPI to each of [`ApicIdSet::deliverable`]; the guest's return value is
    /// the number of APICs that accepted it (KVM counts only software-enabled APICs that
    /// took the interrupt).
    SendIpi(SendIpi),
    /// Wake the vCPU with this APIC id from halt and yield to it (PV spinlock unlock).
    KickCpu {
        /// The APIC id to kick.
        apic_id: u32,
    },
    /// Wake every vCPU from halt (a KICK_CPU to [`APIC_BROADCAST`]).
    KickAll,
    /// Yield this vCPU's time slice to the vCPU with this APIC id.
    SchedYield {
        /// The APIC id of the preempted lock holder.
        apic_id: u32,
    },
    /// Change the attributes of a range of guest pages.
    MapGpaRange {
        /// The first page's guest-physical address (page aligned).
        gpa: u64,
        /// The number of 4 KiB pages (not zero).
        pages: u64,
        /// Page size and encryption attributes.
        attrs: u64,
    },
    /// A valid call that has nothing to do (e.g. a kick to an APIC id the VM lacks).
    Nothing,
}

/// A hypercall refused with a guest-visible error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum GuestError {
    /// Unknown number, or a feature the vCPU's CPUID does not advertise (`-KVM_ENOSYS`).
    #[error("unknown or unavailable hypercall (-KVM_ENOSYS)")]
    NoSys,
    /// Invalid arguments (`-KVM_EINVAL`).
    #[error("invalid hypercall argument (-KVM_EINVAL)")]
    InvalidArgument,
}

impl GuestError {
    /// The (negative) value the guest gets.
    pub fn code(self) -> i64 {
        match self {
            GuestError::NoSys => -KVM_ENOSYS,
            GuestError::InvalidArgument => -KVM_EINVAL,
        }
    }
}

/// Turns hypercalls into actions for one VM, with KVM's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dispatcher {
    /// The features the vCPUs' CPUID advertises.
    pub features: KvmFeatures,
    /// Whether PV CPUID enforcement is on: calls of unadvertised features get `-KVM_ENOSYS`.
    pub enforce: bool,
    /// The highest APIC id in the VM.
    pub max_apic_id: u32,
    /// The guest's physical address width (bounds MAP_GPA_RANGE).
    pub phys_bits: u8,
}

impl Dispatcher {
    /// Decides what `call` asks for, or the error code the guest gets. Total: no argument
    /// value makes it panic or allocate.
    pub fn dispatch(&self, call: &Hypercall) -> Result<HypercallAction, GuestError> {
        match call.nr {
            KVM_HC_SEND_IPI => {
                self.require(KvmFeatures::PV_SEND_IPI)?;
                decode_send_ipi(call).map(HypercallAction::SendIpi)
            }
            KVM_HC_VAPIC_POLL_IRQ => Ok(HypercallAction::Nothing),
            KVM_HC_KICK_CPU => {
                self.require(KvmFeatures::PV_UNHALT)?;
                if call.arg(1) == APIC_BROADCAST {
                    return Ok(HypercallAction::KickAll);
                }
                Ok(self.apic_action(call.arg(1), |apic_id| HypercallAction::KickCpu { apic_id }))
            }
            KVM_HC_SCHED_YIELD => {
                self.require(KvmFeatures::PV_SCHED_YIELD)?;
                Ok(
                    self.apic_action(call.arg(0), |apic_id| HypercallAction::SchedYield {
                        apic_id,
                    }),
                )
            }
            KVM_HC_MAP_GPA_RANGE => {
                self.require(KvmFeatures::HC_MAP_GPA_RANGE)?;
                self.decode_map_gpa_range(call)
            }
            _ => Err(GuestError::NoSys),
        }
    }

    /// The destinations of `ipi` that exist in the VM: what SEND_IPI returns when every
    /// destination APIC is software-enabled and accepts the interrupt (an upper bound
    /// otherwise).
    pub fn send_ipi_count(&self, ipi: &SendIpi) -> i64 {
        i64::from(ipi.destinations.count_deliverable(self.max_apic_id))
    }

    /// Handles a `KVM_EXIT_HYPERCALL`: dispatches it, delivers a SEND_IPI through `deliver`
    /// (called once per existing destination; it returns whether that APIC accepted the
    /// interrupt), and writes the guest's return value (0, the number of accepted IPIs, or
    /// the error code) into the exit. Returns the action for the caller to carry out (a
    /// SEND_IPI is already delivered).
    ///
    /// A [`HypercallAction::MapGpaRange`] is the exception: its result depends on the
    /// conversion, which only the caller does, so the exit's return value is left alone;
    /// the caller writes it with [`guest_return_value`] (0, or `-KVM_EINVAL` when the
    /// conversion failed) before the next `KVM_RUN`, which is when KVM hands it to the
    /// guest (`complete_hypercall_exit`).
    pub fn handle_exit(
        &self,
        exit: &mut HypercallExit<'_>,
        mut deliver: impl FnMut(&SendIpi, u32) -> bool,
    ) -> Option<HypercallAction> {
        let call = Hypercall::from_exit(exit);
        let (result, action) = match self.dispatch(&call) {
            Ok(action @ HypercallAction::MapGpaRange { .. }) => return Some(action),
            Ok(HypercallAction::SendIpi(ipi)) => {
                let accepted = ipi
                    .destinations
                    .deliverable(self.max_apic_id)
                    .filter(|apic_id| deliver(&ipi, *apic_id))
                    .count();
                (accepted as i64, Some(HypercallAction::SendIpi(ipi)))
            }
            Ok(action) => (0, Some(action)),
            Err(err) => {
                log::debug!("hypercall {} refused: {err}", call.nr);
                (err.code(), None)
            }
        };
        *exit.ret = guest_return_value(result, call.long_mode);
        action
    }

    fn require(&self, feature: KvmFeatures) -> Result<(), GuestError> {
        if self.enforce && !self.features.contains(feature) {
            Err(GuestError::NoSys)
        } else {
            Ok(())
        }
    }

    fn apic_action(&self, id: u64, action: impl Fn(u32) -> HypercallAction) -> HypercallAction {
        match u32::try_from(id) {
            Ok(apic_id) if apic_id <= self.max_apic_id => action(apic_id),
            _ => HypercallAction::Nothing,
        }
    }

    fn decode_map_gpa_range(&self, call: &Hypercall) -> Result<HypercallAction, GuestError> {
        let (gpa, pages, attrs) = (call.arg(0), call.arg(1), call.arg(2));
        let page_mask = (1u64 << PAGE_SHIFT) - 1;
        if gpa & page_mask != 0 || pages == 0 {
            return Err(GuestError::InvalidArgument);
        }
        let end_gfn = (gpa >> PAGE_SHIFT)
            .checked_add(pages)
            .ok_or(GuestError::InvalidArgument)?;
        let limit_gfn = 1u64
            .checked_shl(u32::from(self.phys_bits).saturating_sub(PAGE_SHIFT))
            .unwrap_or(u64::MAX);
        let page_size = attrs & KVM_MAP_GPA_RANGE_PAGE_SZ_MASK;
        let known = KVM_MAP_GPA_RANGE_PAGE_SZ_MASK | KVM_MAP_GPA_RANGE_ENCRYPTED;
        if end_gfn > limit_gfn || page_size == 3 || attrs & !known != 0 {
            return Err(GuestError::InvalidArgument);
        }
        Ok(HypercallAction::MapGpaRange { gpa, pages, attrs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(nr: u64, args: [u64; 4], long_mode: bool) -> Hypercall {
        Hypercall {
            nr,
            args: [args[0], args[1], args[2], args[3], 0, 0],
            long_mode,
        }
    }

    fn dispatcher() -> Dispatcher {
        Dispatcher {
            features: KvmFeatures::PV_SEND_IPI
                | KvmFeatures::PV_UNHALT
                | KvmFeatures::PV_SCHED_YIELD
                | KvmFeatures::HC_MAP_GPA_RANGE,
            enforce: true,
            max_apic_id: 255,
            phys_bits: 46,
        }
    }

    #[test]
    fn send_ipi_decodes_full_bitmap() {
        let c = call(KVM_HC_SEND_IPI, [u64::MAX, u64::MAX, 0, 0xfd], true);
        let ipi = decode_send_ipi(&c).expect("valid");
        assert_eq!(ipi.vector, 0xfd);
        assert_eq!(ipi.delivery_mode, 0);
        let ids: Vec<u32> = ipi.destinations.iter().collect();
        assert_eq!(ids, (0..128).collect::<Vec<u32>>());
        assert_eq!(dispatcher().send_ipi_count(&ipi), 128);
    }

    #[test]
    fn send_ipi_offsets_and_bounds() {
        // Bits 0 and 63 of low, bit 0 of high, from APIC id 100.
        let c = call(
            KVM_HC_SEND_IPI,
            [1 | (1 << 63), 1, 100, 0x4000 | 0x400 | 0x30],
            true,
        );
        let ipi = decode_send_ipi(&c).expect("valid");
        assert_eq!(
            ipi.destinations.iter().collect::<Vec<_>>(),
            vec![100, 163, 164]
        );
        assert_eq!(ipi.delivery_mode, 4, "NMI");
        assert!(ipi.level && !ipi.level_triggered);
        let d = Dispatcher {
            max_apic_id: 163,
            ..dispatcher()
        };
        assert_eq!(d.send_ipi_count(&ipi), 2, "164 does not exist");
    }

    #[test]
    fn send_ipi_32bit_mode_uses_32bit_clusters() {
        let c = call(
            KVM_HC_SEND_IPI,
            [
                0xffff_ffff_0000_0001,
                0x1_0000_0001,
                0x1_0000_0008,
                0x1_0000_00ec,
            ],
            false,
        );
        let ipi = decode_send_ipi(&c).expect("valid after truncation");
        assert_eq!(ipi.vector, 0xec);
        assert_eq!(ipi.destinations.iter().collect::<Vec<_>>(), vec![8, 40]);
    }

    #[test]
    fn counting_matches_iterating() {
        let words = [0, 1, 1 << 63, 0xdead_beef_f00d_cafe, u64::MAX];
        for low in words {
            for high in words {
                for min in [0, 1, 31, 63, 64, 200, u32::MAX - 70, u32::MAX] {
                    for cluster in [32, 64] {
                        let set = ApicIdSet {
                            min,
                            low,
                            high,
                            cluster,
                        };
                        for max in [0, 1, 63, 64, 127, 255, u32::MAX] {
                            assert_eq!(
                                set.count_deliverable(max) as usize,
                                set.deliverable(max).count(),
                                "{set:?} max {max}"
                            );
                        }
                    }
                }
            }
        }
        let narrow = ApicIdSet {
            min: 0,
            low: u64::MAX,
            high: u64::MAX,
            cluster: 32,
        };
        assert_eq!(
            narrow.iter().collect::<Vec<_>>(),
            (0..64).collect::<Vec<u32>>()
        );
    }

    #[test]
    fn send_ipi_ids_stop_at_u32_max_within_a_word() {
        let c = call(
            KVM_HC_SEND_IPI,
            [u64::MAX, 0, u64::from(u32::MAX) - 1, 0],
            true,
        );
        let ipi = decode_send_ipi(&c).expect("valid");
        assert_eq!(
            ipi.destinations.iter().collect::<Vec<_>>(),
            vec![u32::MAX - 1, u32::MAX]
        );
        assert_eq!(dispatcher().send_ipi_count(&ipi), 0);
    }

    #[test]
    fn send_ipi_high_word_base_wraps_like_kvm() {
        // 64-bit: min = 2^32 - 64, so the high word starts at APIC 0 (KVM's u32 `min +=
        // cluster_size`).
        let c = call(KVM_HC_SEND_IPI, [0, 0b101, 0xffff_ffc0, 0xf0], true);
        let ipi = decode_send_ipi(&c).expect("valid");
        assert_eq!(ipi.destinations.iter().collect::<Vec<_>>(), vec![0, 2]);
        let one_apic = Dispatcher {
            max_apic_id: 0,
            ..dispatcher()
        };
        assert_eq!(one_apic.send_ipi_count(&ipi), 1);
        assert_eq!(dispatcher().send_ipi_count(&ipi), 2);
        // 32-bit: clusters of 32, min = 2^32 - 32.
        let c = call(KVM_HC_SEND_IPI, [1, 1, 0xffff_ffe0, 0xf0], false);
        let ipi = decode_send_ipi(&c).expect("valid");
        assert_eq!(
            ipi.destinations.iter().collect::<Vec<_>>(),
            vec![0xffff_ffe0, 0]
        );
        assert_eq!(one_apic.send_ipi_count(&ipi), 1);
        // The high word from min = u32::MAX starts at 63 (64-bit) or 31 (32-bit).
        let c = call(KVM_HC_SEND_IPI, [0, 1, u64::from(u32::MAX), 0xf0], true);
        let ipi = decode_send_ipi(&c).expect("valid");
        assert_eq!(ipi.destinations.iter().collect::<Vec<_>>(), vec![63]);
    }

    #[test]
    fn send_ipi_lowest_id_keeps_its_low_32_bits() {
        // KVM's kvm_pv_send_ipi() takes `u32 min`: 2^32 + 5 means APIC 5.
        let c = call(KVM_HC_SEND_IPI, [1, 0, (1 << 32) + 5, 0xf0], true);
        let ipi = decode_send_ipi(&c).expect("valid, as in KVM");
        assert_eq!(ipi.destinations.min, 5);
        assert_eq!(ipi.destinations.iter().collect::<Vec<_>>(), vec![5]);
        let c = call(KVM_HC_SEND_IPI, [1, 0, 1 << 32, 0xf0], true);
        assert_eq!(
            dispatcher()
                .dispatch(&c)
                .map(|a| matches!(a, HypercallAction::SendIpi(_))),
            Ok(true)
        );
    }

    #[test]
    fn send_ipi_rejects_what_kvm_rejects() {
        for icr in [ICR_DEST_LOGICAL | 0xec, 1 << 18, 2 << 18, 3 << 18] {
            let c = call(KVM_HC_SEND_IPI, [1, 0, 0, icr], true);
            assert_eq!(
                decode_send_ipi(&c),
                Err(GuestError::InvalidArgument),
                "{icr:#x}"
            );
            assert_eq!(dispatcher().dispatch(&c), Err(GuestError::InvalidArgument));
        }
    }

    #[test]
    fn unknown_and_unadvertised_get_enosys() {
        let d = dispatcher();
        for nr in [0, 3, KVM_HC_CLOCK_PAIRING, 13, u64::MAX] {
            assert_eq!(d.dispatch(&call(nr, [0; 4], true)), Err(GuestError::NoSys));
        }
        let bare = Dispatcher {
            features: KvmFeatures::empty(),
            ..d
        };
        for nr in [
            KVM_HC_SEND_IPI,
            KVM_HC_KICK_CPU,
            KVM_HC_SCHED_YIELD,
            KVM_HC_MAP_GPA_RANGE,
        ] {
            assert_eq!(
                bare.dispatch(&call(nr, [1, 1, 0, 0], true)),
                Err(GuestError::NoSys)
            );
        }
        let lax = Dispatcher {
            enforce: false,
            ..bare
        };
        assert!(lax
            .dispatch(&call(KVM_HC_SEND_IPI, [1, 0, 0, 0xec], true))
            .is_ok());
        assert_eq!(GuestError::NoSys.code(), -1000);
        assert_eq!(GuestError::InvalidArgument.code(), -22);
    }

    #[test]
    fn kick_and_yield_target_existing_apics() {
        let d = dispatcher();
        assert_eq!(
            d.dispatch(&call(KVM_HC_KICK_CPU, [0, 3, 0, 0], true)),
            Ok(HypercallAction::KickCpu { apic_id: 3 })
        );
        assert_eq!(
            d.dispatch(&call(KVM_HC_SCHED_YIELD, [7, 0, 0, 0], true)),
            Ok(HypercallAction::SchedYield { apic_id: 7 })
        );
        for id in [256, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(
                d.dispatch(&call(KVM_HC_SCHED_YIELD, [id, 0, 0, 0], true)),
                Ok(HypercallAction::Nothing)
            );
        }
        // KVM kicks every vCPU for the xAPIC broadcast id, also in a VM that has an APIC
        // 0xff; any other id past the VM's is nothing.
        for max_apic_id in [7, 0x1ff] {
            let d = Dispatcher { max_apic_id, ..d };
            assert_eq!(
                d.dispatch(&call(KVM_HC_KICK_CPU, [0, 0xff, 0, 0], true)),
                Ok(HypercallAction::KickAll)
            );
        }
        assert_eq!(
            d.dispatch(&call(KVM_HC_KICK_CPU, [0, 0x100, 0, 0], true)),
            Ok(HypercallAction::Nothing)
        );
        assert_eq!(
            d.dispatch(&call(KVM_HC_KICK_CPU, [0, u64::from(u32::MAX), 0, 0], true)),
            Ok(HypercallAction::Nothing)
        );
    }

    #[test]
    fn vapic_poll_irq_answers_zero_as_kvm_does() {
        let d = dispatcher();
        let bare = Dispatcher {
            features: KvmFeatures::empty(),
            ..d
        };
        for d in [d, bare] {
            assert_eq!(
                d.dispatch(&call(KVM_HC_VAPIC_POLL_IRQ, [1, 2, 3, 4], true)),
                Ok(HypercallAction::Nothing)
            );
        }
        let mut ret = 0x1234u64;
        let mut exit = HypercallExit {
            nr: KVM_HC_VAPIC_POLL_IRQ,
            args: [0; 6],
            ret: &mut ret,
            longmode: 1,
        };
        assert_eq!(
            d.handle_exit(&mut exit, |_, _| unreachable!()),
            Some(HypercallAction::Nothing)
        );
        assert_eq!(ret, 0);
    }

    #[test]
    fn map_gpa_range_leaves_its_answer_to_the_conversion() {
        let d = dispatcher();
        let mut ret = 0x5555u64;
        let mut exit = HypercallExit {
            nr: KVM_HC_MAP_GPA_RANGE,
            args: [0x20_0000, 1, 0, 0, 0, 0],
            ret: &mut ret,
            longmode: 1,
        };
        assert!(matches!(
            d.handle_exit(&mut exit, |_, _| unreachable!()),
            Some(HypercallAction::MapGpaRange { .. })
        ));
        assert_eq!(ret, 0x5555, "written before the conversion");
        // A refused one is answered at once.
        let mut exit = HypercallExit {
            nr: KVM_HC_MAP_GPA_RANGE,
            args: [0x20_0001, 1, 0, 0, 0, 0],
            ret: &mut ret,
            longmode: 1,
        };
        assert_eq!(d.handle_exit(&mut exit, |_, _| unreachable!()), None);
        assert_eq!(ret, guest_return_value(-22, true));
    }

    #[test]
    fn map_gpa_range_validation() {
        let d = dispatcher();
        assert_eq!(
            d.dispatch(&call(
                KVM_HC_MAP_GPA_RANGE,
                [0x20_0000, 512, 1 | (1 << 4), 0],
                true
            )),
            Ok(HypercallAction::MapGpaRange {
                gpa: 0x20_0000,
                pages: 512,
                attrs: 0x11
            })
        );
        let bad = [
            [0x1001, 1, 0, 0],                // not page aligned
            [0x1000, 0, 0, 0],                // no pages
            [0xffff_ffff_ffff_f000, 2, 0, 0], // gfn overflow
            [1 << 45, (1 << 33) + 1, 0, 0],   // beyond 46 bits
            [0x1000, 1, 3, 0],                // page size 3
            [0x1000, 1, 1 << 5, 0],           // unknown attribute
        ];
        for args in bad {
            assert_eq!(
                d.dispatch(&call(KVM_HC_MAP_GPA_RANGE, args, true)),
                Err(GuestError::InvalidArgument),
                "{args:x?}"
            );
        }
    }

    #[test]
    fn handle_exit_delivers_counts_and_answers() {
        let d = Dispatcher {
            max_apic_id: 7,
            ..dispatcher()
        };
        let mut ret = 0u64;
        let mut delivered = Vec::new();
        let mut exit = HypercallExit {
            nr: KVM_HC_SEND_IPI,
            args: [0xff0f, 0, 0, 0xec, 0, 0],
            ret: &mut ret,
            longmode: 1,
        };
        // Bits 0-3 and 8-15 are set; APICs above 7 do not exist; odd ones refuse the IPI.
        let action = d.handle_exit(&mut exit, |ipi, id| {
            assert_eq!(ipi.vector, 0xec);
            delivered.push(id);
            id % 2 == 0
        });
        assert!(matches!(action, Some(HypercallAction::SendIpi(_))));
        assert_eq!(delivered, vec![0, 1, 2, 3]);
        assert_eq!(ret, 2);

        let mut ret = 0u64;
        let mut exit = HypercallExit {
            nr: 99,
            args: [0; 6],
            ret: &mut ret,
            longmode: 0,
        };
        assert_eq!(d.handle_exit(&mut exit, |_, _| unreachable!()), None);
        assert_eq!(ret, 0xffff_fc18);

        let mut ret = 0u64;
        let mut exit = HypercallExit {
            nr: KVM_HC_SCHED_YIELD,
            args: [5, 0, 0, 0, 0, 0],
            ret: &mut ret,
            longmode: 1,
        };
        assert_eq!(
            d.handle_exit(&mut exit, |_, _| unreachable!()),
            Some(HypercallAction::SchedYield { apic_id: 5 })
        );
        assert_eq!(ret, 0);
    }

    #[test]
    fn return_values_follow_mode() {
        assert_eq!(guest_return_value(-1000, true), 0xffff_ffff_ffff_fc18);
        assert_eq!(guest_return_value(-1000, false), 0xffff_fc18);
        assert_eq!(guest_return_value(128, false), 128);
    }

    #[test]
    fn hostile_arguments_never_panic() {
        let d = dispatcher();
        let values = [
            0,
            1,
            0xfff,
            1 << 12,
            1 << 31,
            1 << 32,
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ];
        for nr in [1, 5, 10, 11, 12] {
            for a in values {
                for b in values {
                    for long_mode in [false, true] {
                        let c = call(nr, [a, b, a ^ b, b.wrapping_mul(a)], long_mode);
                        if let Ok(HypercallAction::SendIpi(ipi)) = d.dispatch(&c) {
                            assert!(ipi.destinations.len() <= 128);
                        }
                    }
                }
            }
        }
    }
}
