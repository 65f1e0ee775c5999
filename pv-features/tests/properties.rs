//! Property tests of the decoders that take guest-controlled input: SEND_IPI decoding and
//! the hypercall dispatcher (registers a guest sets), the steal-time MSR decoder (a value a
//! guest writes) and the steal-time record reader (guest memory a guest writes). None may
//! panic on any input, and what they return must agree with the input.

use proptest::prelude::*;
use pv_features::cpuid::KvmFeatures;
use pv_features::hypercall::{
    decode_send_ipi, guest_return_value, Dispatcher, Hypercall, HypercallAction, KVM_HC_SEND_IPI,
};
use pv_features::steal_time::{read_snapshot, StealTimeMsr, STEAL_TIME_RECORD_SIZE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

fn hypercall() -> impl Strategy<Value = Hypercall> {
    let nr = prop_oneof![0u64..16, any::<u64>()];
    // Arguments near the interesting edges as often as anywhere.
    let arg = prop_oneof![
        any::<u64>(),
        0u64..256,
        Just(u64::MAX),
        (0u64..64).prop_map(|s| 1u64 << s),
        any::<u32>().prop_map(|v| u64::from(u32::MAX - (v % 256))),
    ];
    (nr, prop::array::uniform6(arg), any::<bool>()).prop_map(|(nr, args, long_mode)| Hypercall {
        nr,
        args,
        long_mode,
    })
}

fn dispatcher() -> impl Strategy<Value = Dispatcher> {
    (
        any::<u32>(),
        any::<bool>(),
        prop_oneof![0u32..300, any::<u32>()],
        any::<u8>(),
    )
        .prop_map(|(features, enforce, max_apic_id, phys_bits)| Dispatcher {
            features: KvmFeatures::from_bits_truncate(features),
            enforce,
            max_apic_id,
            phys_bits,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn send_ipi_decoding_never_panics_and_counts_right(
        call in hypercall(),
        max_apic_id in prop_oneof![0u32..300, any::<u32>()],
    ) {
        let Ok(ipi) = decode_send_ipi(&call) else {
            return Ok(());
        };
        let set = ipi.destinations;
        let ids: Vec<u32> = set.iter().collect();
        let cluster: u32 = if call.long_mode { 64 } else { 32 };
        prop_assert!(ids.len() <= 2 * cluster as usize, "{} destinations", ids.len());
        // As KVM's u32 arithmetic: the low word's ids start at `min`, the high word's at
        // `min + cluster` wrapped to 32 bits; within a word ids past u32::MAX are dropped.
        let high_base = set.min.wrapping_add(cluster);
        let in_word = |id: u32, base: u32| id >= base && u64::from(id - base) < u64::from(cluster);
        for id in &ids {
            prop_assert!(
                in_word(*id, set.min) || in_word(*id, high_base),
                "{} is in neither word (min {}, high base {})", id, set.min, high_base
            );
        }
        let low = call.args[0] & if cluster == 64 { u64::MAX } else { u64::from(u32::MAX) };
        let high = call.args[1] & if cluster == 64 { u64::MAX } else { u64::from(u32::MAX) };
        let expect = |word: u64, base: u32| {
            (0..cluster)
                .filter(|bit| word >> bit & 1 == 1)
                .filter_map(|bit| base.checked_add(bit))
                .collect::<Vec<u32>>()
        };
        let mut want = expect(low, set.min);
        want.extend(expect(high, high_base));
        prop_assert_eq!(&ids, &want, "low word first, each ascending");
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        prop_assert_eq!(unique.len(), ids.len(), "no id twice: {:?}", ids);
        let deliverable = set.deliverable(max_apic_id).count();
        prop_assert_eq!(set.count_deliverable(max_apic_id) as usize, deliverable);
        prop_assert_eq!(set.len(), ids.len());
    }

    #[test]
    fn dispatch_never_panics_and_answers_the_guest(call in hypercall(), d in dispatcher()) {
        let answer = d.dispatch(&call);
        let mut ret = 0xdead_beef_u64;
        let mut exit = kvm_ioctls::HypercallExit {
            nr: call.nr,
            args: call.args,
            ret: &mut ret,
            longmode: u32::from(call.long_mode),
        };
        let mut delivered = 0i64;
        let action = d.handle_exit(&mut exit, |_, _| {
            delivered += 1;
            true
        });
        let expected = match answer {
            Ok(HypercallAction::SendIpi(ipi)) => {
                prop_assert_eq!(call.nr, KVM_HC_SEND_IPI);
                prop_assert_eq!(delivered, d.send_ipi_count(&ipi));
                delivered
            }
            // The caller answers a MAP_GPA_RANGE once it has converted the range.
            Ok(HypercallAction::MapGpaRange { .. }) => {
                prop_assert_eq!(ret, 0xdead_beef, "answered before the conversion");
                return Ok(());
            }
            Ok(_) => 0,
            Err(e) => {
                prop_assert!(action.is_none());
                e.code()
            }
        };
        prop_assert_eq!(ret, guest_return_value(expected, call.long_mode));
        if !call.long_mode {
            prop_assert!(ret <= u64::from(u32::MAX), "32-bit guests get 32-bit answers");
        }
    }

    #[test]
    fn steal_time_msr_decoding_never_panics(
        value in prop_oneof![any::<u64>(), (0u64..1 << 20), Just(u64::MAX)],
        phys_bits in any::<u8>(),
    ) {
        match StealTimeMsr::decode(value, phys_bits) {
            Ok(StealTimeMsr::Disabled) => prop_assert_eq!(value & 1, 0),
            Ok(StealTimeMsr::Enabled { gpa }) => {
                prop_assert_eq!(value & 1, 1);
                prop_assert_eq!(gpa % STEAL_TIME_RECORD_SIZE as u64, 0);
                prop_assert_eq!(gpa, value & !(STEAL_TIME_RECORD_SIZE as u64 - 1));
                if phys_bits < 64 {
                    prop_assert_eq!(gpa >> phys_bits, 0);
                }
                prop_assert_eq!(StealTimeMsr::encode(gpa), Ok(value));
            }
            Err(_) => prop_assert!(value & 0x3e != 0 || (value & 1 == 1 && phys_bits < 64)),
        }
    }
}

/// Guest memory of up to three regions at page-aligned addresses, filled with `fill`.
fn memory() -> impl Strategy<Value = (GuestMemoryMmap, Vec<(u64, usize)>)> {
    let region = (0u64..64, 1usize..4);
    (
        prop::collection::vec(region, 1..4),
        prop::collection::vec(any::<u8>(), 64..512),
    )
        .prop_map(|(regions, fill)| {
            // Lay the regions out in order with gaps, so they never overlap.
            let mut at = 0u64;
            let mut ranges = Vec::new();
            for (gap_pages, pages) in regions {
                at += gap_pages * 4096;
                ranges.push((at, pages * 4096));
                at += (pages * 4096) as u64;
            }
            let layout: Vec<(GuestAddress, usize)> =
                ranges.iter().map(|(a, l)| (GuestAddress(*a), *l)).collect();
            let mem = GuestMemoryMmap::<()>::from_ranges(&layout).expect("guest memory");
            for (start, len) in &ranges {
                for (i, chunk) in (0..*len).step_by(fill.len()).enumerate() {
                    let n = fill.len().min(len - chunk);
                    let rotated: Vec<u8> = fill.iter().cycle().skip(i).take(n).copied().collect();
                    mem.write_slice(&rotated, GuestAddress(start + chunk as u64))
                        .expect("fill");
                }
            }
            (mem, ranges)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn record_reader_never_panics_over_any_guest_memory(
        (mem, ranges) in memory(),
        pick in any::<prop::sample::Index>(),
        offset in prop_oneof![0u64..64, (0u64..16384), any::<u64>()],
        msr in any::<u64>(),
    ) {
        // An address inside, at the edge of or past a region, aligned or not.
        let (start, len) = ranges[pick.index(ranges.len())];
        for gpa in [start.wrapping_add(offset), start + len as u64 - 64, offset, u64::MAX - 8] {
            if let Ok(snapshot) = read_snapshot(&mem, GuestAddress(gpa)) {
                prop_assert_eq!(snapshot.version % 2, 0, "an odd version is never a snapshot");
                let version: u32 = mem.read_obj(GuestAddress(gpa + 8)).expect("version");
                let steal: u64 = mem.read_obj(GuestAddress(gpa)).expect("steal");
                let preempted: u8 = mem.read_obj(GuestAddress(gpa + 16)).expect("preempted");
                prop_assert_eq!(snapshot.version, version);
                prop_assert_eq!(snapshot.steal_ns, steal);
                prop_assert_eq!(snapshot.preempted_raw, preempted);
                prop_assert_eq!(snapshot.preempted, preempted & 1 != 0);
                prop_assert_eq!(snapshot.flush_tlb, preempted & 2 != 0);
            }
        }
        // And through the MSR, as pv-vmm's vm.counters does.
        if let Ok(Some(gpa)) = StealTimeMsr::decode(msr, 52).and_then(|m| m.locate(&mem)) {
            let _ = read_snapshot(&mem, gpa);
        }
    }
}
