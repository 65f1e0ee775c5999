//! The bodies of the fuzz targets, as plain functions: the `fuzz_targets/*.rs` binaries
//! hand libFuzzer's input to them, and the regression tests in `tests/` replay committed
//! inputs through the same functions with a plain `cargo test`.
//!
//! Every function takes arbitrary bytes and either returns or panics; a panic (including
//! a failed consistency assertion) is a bug.

#![deny(missing_docs)]

use hypervisor_glue::change::{plan_change, PvPatch, VmState};
use hypervisor_glue::cpus::CpusConfig;
use pv_features::config::PvConfig;
use pv_features::cpuid::KvmFeatures;
use pv_features::exits::DisableExits;
use pv_features::host::HostPv;
use pv_features::hypercall::{
    decode_send_ipi, guest_return_value, Dispatcher, Hypercall, HypercallAction,
};
use pv_features::hyperv::{HvCpuidSource, SynicCap};
use pv_features::steal_time::{read_snapshot, StealTimeMsr};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Takes fixed-size little-endian values off the front of the input; zeros once it runs out.
#[derive(Debug)]
pub struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    /// Wraps `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self(data)
    }

    /// The next `N` bytes (zero-padded).
    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }

    /// The next u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }

    /// The next u64.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }

    /// Whatever is left.
    pub fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// A host as `HostPv::probe` could report it, from the input.
pub fn host(input: &mut Input<'_>) -> HostPv {
    let flags = input.u8();
    HostPv {
        features: KvmFeatures::from_bits_truncate(input.u32()),
        allowed_exits: DisableExits::from_bits_truncate(u32::from(input.u8())),
        halt_poll: flags & 1 != 0,
        enforce_pv_cpuid: flags & 2 != 0,
        binary_stats: flags & 4 != 0,
        hyperv: flags & 8 != 0,
        hyperv_cpuid: match flags >> 4 & 3 {
            1 => Some(HvCpuidSource::System),
            2 => Some(HvCpuidSource::Vcpu),
            _ => None,
        },
        hyperv_synic: match flags >> 6 {
            1 => Some(SynicCap::Synic),
            2 => Some(SynicCap::Synic2),
            _ => None,
        },
        exit_hypercall_mask: input.u64(),
        msr_filter: input.u8() & 1 != 0,
    }
}

/// `--cpus`: any text parses or is refused; what parses prints to a string that parses back
/// to the same configuration and prints the same again; validation against any host
/// returns.
pub fn cpus_option(data: &[u8]) {
    let mut input = Input::new(data);
    let host = host(&mut input);
    let host_cpus = usize::from(input.u8());
    let Ok(text) = std::str::from_utf8(input.rest()) else {
        return;
    };
    let Ok(config) = CpusConfig::parse(text) else {
        return;
    };
    let _ = config.validate(&host, host_cpus, KvmFeatures::empty());
    let Ok(printed) = config.to_option_string() else {
        return;
    };
    let reparsed = CpusConfig::parse(&printed)
        .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which does not parse: {e}"));
    assert_eq!(reparsed, config, "{text:?} -> {printed:?}");
    assert_eq!(reparsed.to_option_string().as_deref(), Ok(printed.as_str()));
}

/// The VM config JSON (`vm.create`'s body) and its `kvm_pv` validation against any host:
/// parsing, the VMM's own checks (without touching files: the payload paths are not
/// looked at), the glue's validation, and a JSON round trip of what parsed.
pub fn vm_config(data: &[u8]) {
    let mut input = Input::new(data);
    let host = host(&mut input);
    let host_cpus = usize::from(input.u8());
    let backs = KvmFeatures::from_bits_truncate(input.u32()) & KvmFeatures::VMM_PROVIDED;
    let json = input.rest();
    if let Ok(config) = serde_json::from_slice::<vmm::config::vm_config::VmConfig>(json) {
        if let Ok(validated) = config.cpus.validate(&host, host_cpus, backs) {
            // What validates resolves to features the host can back.
            let effective = validated.effective;
            assert!(
                (effective.features - host.backable()).is_empty(),
                "{effective:?} offers features the host lacks"
            );
            assert!((effective.disable_exits - host.allowed_exits).is_empty());
        }
        let text = serde_json::to_string(&config).expect("a parsed config serializes");
        let back: vmm::config::vm_config::VmConfig =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(back, config);
    }
    if let Ok(pv) = serde_json::from_slice::<PvConfig>(json) {
        let _ = pv.resolve(&host, backs);
    }
}

/// SEND_IPI decode and the dispatcher over any registers a guest can set.
pub fn send_ipi(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.u8();
    let call = Hypercall {
        nr: u64::from(input.u8() & 0x1f),
        args: [
            input.u64(),
            input.u64(),
            input.u64(),
            input.u64(),
            input.u64(),
            input.u64(),
        ],
        long_mode: flags & 1 != 0,
    };
    let dispatcher = Dispatcher {
        features: KvmFeatures::from_bits_truncate(input.u32()),
        enforce: flags & 2 != 0,
        max_apic_id: input.u32(),
        phys_bits: input.u8(),
    };
    if let Ok(ipi) = decode_send_ipi(&call) {
        let ids: Vec<u32> = ipi.destinations.iter().collect();
        assert!(ids.len() <= 128, "{} destinations", ids.len());
        // Low word first, each ascending; the high word's base wraps in 32 bits as in KVM,
        // so the whole list need not ascend, but no id comes twice.
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "an id twice: {ids:?}");
        let max = dispatcher.max_apic_id;
        assert_eq!(
            ipi.destinations.count_deliverable(max) as usize,
            ipi.destinations.deliverable(max).count()
        );
    }
    let answer = dispatcher.dispatch(&call);
    let mut ret = 0xdead_beef_u64;
    let mut exit = kvm_ioctls::HypercallExit {
        nr: call.nr,
        args: call.args,
        ret: &mut ret,
        longmode: u32::from(call.long_mode),
    };
    let mut delivered = 0i64;
    let action = dispatcher.handle_exit(&mut exit, |_, _| {
        delivered += 1;
        true
    });
    let expected = match answer {
        Ok(HypercallAction::SendIpi(_)) => delivered,
        // The caller answers a MAP_GPA_RANGE once it has converted the range.
        Ok(HypercallAction::MapGpaRange { .. }) => {
            assert_eq!(ret, 0xdead_beef, "answered before the conversion");
            return;
        }
        Ok(_) => 0,
        Err(e) => {
            assert!(action.is_none());
            e.code()
        }
    };
    assert_eq!(ret, guest_return_value(expected, call.long_mode));
}

/// The steal-time MSR decoder and the record reader over guest memory the input lays out
/// and fills.
pub fn steal_time(data: &[u8]) {
    let mut input = Input::new(data);
    let msr = input.u64();
    let phys_bits = input.u8();
    let raw_gpa = input.u64();
    // One to three regions of 1-4 pages with page gaps between them.
    let count = usize::from(input.u8() % 3) + 1;
    let mut ranges = Vec::with_capacity(count);
    let mut at = 0u64;
    for _ in 0..count {
        let shape = input.u8();
        at += u64::from(shape >> 4) * 4096;
        let len = (usize::from(shape & 3) + 1) * 4096;
        ranges.push((GuestAddress(at), len));
        at += len as u64;
    }
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&ranges) else {
        return;
    };
    let fill = input.rest();
    if !fill.is_empty() {
        for (start, len) in &ranges {
            let bytes: Vec<u8> = fill.iter().cycle().take(*len).copied().collect();
            mem.write_slice(&bytes, *start).expect("inside the region");
        }
    }
    if let Ok(decoded) = StealTimeMsr::decode(msr, phys_bits) {
        if let Ok(Some(gpa)) = decoded.locate(&mem) {
            let _ = read_snapshot(&mem, gpa);
        }
    }
    if let Ok(snapshot) = read_snapshot(&mem, GuestAddress(raw_gpa)) {
        assert_eq!(snapshot.version % 2, 0);
        let version: u32 = mem
            .read_obj(GuestAddress(raw_gpa + 8))
            .expect("a snapshot came from inside guest memory");
        assert_eq!(snapshot.version, version);
    }
}

/// An API request: any path, any method byte and any body, routed and parsed as the
/// server does; a `vm.pv` body that parses is planned against any host in every VM state.
pub fn api_request(data: &[u8]) {
    let mut input = Input::new(data);
    let host = host(&mut input);
    let which = input.u8();
    let body = input.rest();
    let endpoints = vmm::api::ENDPOINTS;
    let path = match endpoints.get(usize::from(which) % (endpoints.len() + 1)) {
        Some(e) => format!("{}{}", vmm::api::PREFIX, e.name),
        // Otherwise the path is the body's first line, the rest is the body.
        None => String::from_utf8_lossy(body.split(|b| *b == b'\n').next().unwrap_or_default())
            .into_owned(),
    };
    let Ok(endpoint) = vmm::api::route(&path) else {
        return;
    };
    let request = match vmm::api::parse_request(endpoint, body) {
        Ok(r) => r,
        Err(e) => {
            assert_eq!(e.status(), 400, "{e}");
            let json: serde_json::Value =
                serde_json::from_str(&e.body()).expect("error bodies are JSON");
            assert!(json[0].is_string(), "{json}");
            return;
        }
    };
    if let vmm::api::ApiRequest::VmPv(patch) = request {
        plan_all_states(&patch, &host);
    }
}

fn plan_all_states(patch: &PvPatch, host: &HostPv) {
    for state in [
        VmState::Created,
        VmState::Running,
        VmState::Paused,
        VmState::Shutdown,
    ] {
        for requested in [PvConfig::shared(), PvConfig::dedicated()] {
            if let Ok(plan) =
                plan_change(&requested, None, patch, state, host, KvmFeatures::empty())
            {
                // The plan's new requested config must itself be a valid config.
                serde_json::to_value(&plan).expect("plans serialize");
                let _ = plan.new_requested.resolve(host, KvmFeatures::empty());
            }
        }
    }
}
