//! Property tests of the `--cpus` syntax: any configuration the syntax can express prints
//! to a string that parses back to the same configuration, and printing that again gives
//! the same string; any string at all either parses or is refused, never panics, and what
//! parses is stable under print→parse→print.

use hypervisor_glue::cpus::{
    CoreScheduling, CpuAffinity, CpuFeatures, CpuProfile, CpuTopology, CpusConfig,
};
use proptest::prelude::*;
use pv_features::config::{FeatureSelection, PvConfig};
use pv_features::cpuid::KvmFeatures;
use pv_features::exits::DisableExits;

fn topology() -> impl Strategy<Value = CpuTopology> {
    (any::<u16>(), any::<u16>(), any::<u16>(), any::<u16>()).prop_map(|(t, c, d, p)| CpuTopology {
        threads_per_core: t,
        cores_per_die: c,
        dies_per_package: d,
        packages: p,
    })
}

fn affinity() -> impl Strategy<Value = Vec<CpuAffinity>> {
    // Host CPU lists in any order, with repeats and runs (the printer compresses runs
    // into ranges), never empty: an empty list has no --cpus spelling.
    let entry = (
        any::<u32>(),
        prop::collection::vec(
            prop_oneof![0usize..64, any::<u16>().prop_map(usize::from)],
            1..12,
        ),
    )
        .prop_map(|(vcpu, host_cpus)| CpuAffinity { vcpu, host_cpus });
    prop::collection::vec(entry, 1..5)
}

fn feature_selection() -> impl Strategy<Value = FeatureSelection> {
    prop_oneof![
        Just(FeatureSelection::All),
        Just(FeatureSelection::Off),
        any::<u32>().prop_map(|bits| FeatureSelection::List(KvmFeatures::from_bits_truncate(bits))),
    ]
}

fn pv_config() -> impl Strategy<Value = PvConfig> {
    (
        feature_selection(),
        any::<bool>(),
        prop::option::of(any::<u32>().prop_map(DisableExits::from_bits_truncate)),
        prop::option::of(any::<u32>()),
        any::<bool>(),
    )
        .prop_map(
            |(features, dedicated, disable_exits, halt_poll_ns, enforce_pv_cpuid)| PvConfig {
                features,
                dedicated,
                disable_exits,
                halt_poll_ns,
                enforce_pv_cpuid,
            },
        )
}

fn cpus_config() -> impl Strategy<Value = CpusConfig> {
    (
        (
            any::<u32>(),
            any::<u32>(),
            prop::option::of(topology()),
            any::<bool>(),
        ),
        (
            any::<u8>(),
            prop::option::of(affinity()),
            any::<bool>(),
            any::<bool>(),
        ),
        prop_oneof![
            Just(CoreScheduling::Vm),
            Just(CoreScheduling::Vcpu),
            Just(CoreScheduling::Off)
        ],
        pv_config(),
    )
        .prop_map(
            |(
                (boot_vcpus, max_vcpus, topology, kvm_hyperv),
                (max_phys_bits, affinity, amx, nested),
                core_scheduling,
                kvm_pv,
            )| CpusConfig {
                boot_vcpus,
                max_vcpus,
                topology,
                kvm_hyperv,
                max_phys_bits,
                affinity,
                features: CpuFeatures { amx },
                nested,
                core_scheduling,
                profile: CpuProfile::Host,
                kvm_pv,
            },
        )
}

/// Text made of the pieces `--cpus` strings are made of, so that many cases get past the
/// first key.
fn cpus_like_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("boot=".to_owned()),
        Just("max=".to_owned()),
        Just("topology=".to_owned()),
        Just("affinity=".to_owned()),
        Just("kvm_pv=".to_owned()),
        Just("disable_exits=".to_owned()),
        Just("halt_poll_ns=".to_owned()),
        Just("dedicated=on".to_owned()),
        Just("enforce_pv_cpuid=off".to_owned()),
        Just("max_phys_bits=".to_owned()),
        Just("core_scheduling=vcpu".to_owned()),
        Just("features=[amx]".to_owned()),
        Just("[steal_time,pv_tlb_flush]".to_owned()),
        Just("[hlt,pause]".to_owned()),
        Just("[0@[1-3],2@[0,4]]".to_owned()),
        Just(",".to_owned()),
        Just("@".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(":".to_owned()),
        Just("-".to_owned()),
        Just("=".to_owned()),
        (0u64..100_000).prop_map(|n| n.to_string()),
        "[a-z_]{1,12}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn print_parse_print_is_stable(config in cpus_config()) {
        let printed = config.to_option_string().expect("every generated config is expressible");
        let parsed = CpusConfig::parse(&printed)
            .unwrap_or_else(|e| panic!("{printed}: does not parse back: {e}"));
        prop_assert_eq!(&parsed, &config, "{}", printed);
        let again = parsed.to_option_string().expect("prints again");
        prop_assert_eq!(again, printed);
    }

    #[test]
    fn any_text_parses_or_is_refused_and_what_parses_is_stable(text in cpus_like_text()) {
        let Ok(parsed) = CpusConfig::parse(&text) else {
            return Ok(());
        };
        // What parses may still be inexpressible (an empty affinity list): then printing
        // says so instead of writing something else.
        let Ok(printed) = parsed.to_option_string() else {
            return Ok(());
        };
        let reparsed = CpusConfig::parse(&printed)
            .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which fails: {e}"));
        prop_assert_eq!(&reparsed, &parsed, "{:?} -> {:?}", text, printed);
        prop_assert_eq!(reparsed.to_option_string().expect("prints"), printed);
    }

    #[test]
    fn json_round_trips(config in cpus_config()) {
        let json = serde_json::to_string(&config).expect("serializes");
        let back: CpusConfig = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("{json}: {e}"));
        prop_assert_eq!(back, config);
    }
}
