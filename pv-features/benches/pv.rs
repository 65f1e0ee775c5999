//! Hot paths a VMM runs per guest event: SEND_IPI decode + dispatch of a full
//! 128-destination bitmap, and a consistent steal-time snapshot read from guest memory.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use pv_features::cpuid::KvmFeatures;
use pv_features::hypercall::{Dispatcher, Hypercall, HypercallAction, KVM_HC_SEND_IPI};
use pv_features::steal_time::{read_snapshot, StealTimeRecord};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

fn send_ipi(c: &mut Criterion) {
    let dispatcher = Dispatcher {
        features: KvmFeatures::PV_SEND_IPI,
        enforce: true,
        max_apic_id: 255,
        phys_bits: 46,
    };
    let call = Hypercall {
        nr: KVM_HC_SEND_IPI,
        args: [u64::MAX, u64::MAX, 0, 0xfd, 0, 0],
        long_mode: true,
    };
    c.bench_function("send_ipi_decode_dispatch_128", |b| {
        b.iter(|| match dispatcher.dispatch(black_box(&call)) {
            Ok(HypercallAction::SendIpi(ipi)) => dispatcher.send_ipi_count(&ipi),
            _ => unreachable!("a valid SEND_IPI"),
        })
    });
    c.bench_function("send_ipi_decode_dispatch_iterate_128", |b| {
        b.iter(|| match dispatcher.dispatch(black_box(&call)) {
            Ok(HypercallAction::SendIpi(ipi)) => ipi
                .destinations
                .deliverable(dispatcher.max_apic_id)
                .fold(0u64, |acc, id| acc + u64::from(id)),
            _ => unreachable!("a valid SEND_IPI"),
        })
    });
}

fn steal_time(c: &mut Criterion) {
    let mem =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("guest memory");
    let record = StealTimeRecord {
        steal: 123_456,
        version: 2,
        preempted: 1,
        ..Default::default()
    };
    mem.write_obj(record, GuestAddress(0x1000)).expect("write");
    c.bench_function("steal_time_snapshot", |b| {
        b.iter(|| read_snapshot(&mem, black_box(GuestAddress(0x1000))))
    });
}

criterion_group!(benches, send_ipi, steal_time);
criterion_main!(benches);
