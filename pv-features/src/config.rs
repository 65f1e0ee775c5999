//! `PvConfig`: what a user asks for, its presets, and its resolution against the host into
//! an [`EffectivePv`] report.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::cpuid::{
    negotiate, Dropped, KvmFeatures, KvmHints, NegotiationInput, Rule, UnknownName,
};
use crate::exits::DisableExits;
use crate::host::HostPv;

/// Which KVM features to offer the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeatureSelection {
    /// Everything the host supports and the configuration allows (`all`).
    #[default]
    All,
    /// No KVM PV leaves at all (`off`): the guest sees no KVM signature.
    Off,
    /// Exactly these, minus what the host lacks (`[steal_time,pv_tlb_flush]`).
    List(KvmFeatures),
}

impl FeatureSelection {
    /// Parses `all`, `off`, or a list of names with or without brackets.
    pub fn parse(value: &str) -> Result<Self, UnknownName> {
        match value.trim() {
            "all" => Ok(FeatureSelection::All),
            "off" => Ok(FeatureSelection::Off),
            list => {
                let inner = list
                    .strip_prefix('[')
                    .and_then(|l| l.strip_suffix(']'))
                    .unwrap_or(list);
                KvmFeatures::parse_list(inner).map(FeatureSelection::List)
            }
        }
    }

    /// The features requested before negotiation.
    pub fn requested(self) -> KvmFeatures {
        match self {
            FeatureSelection::All => KvmFeatures::all(),
            FeatureSelection::Off => KvmFeatures::empty(),
            FeatureSelection::List(set) => set,
        }
    }
}

impl fmt::Display for FeatureSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeatureSelection::All => f.write_str("all"),
            FeatureSelection::Off => f.write_str("off"),
            FeatureSelection::List(set) => write!(f, "[{set}]"),
        }
    }
}

impl Serialize for FeatureSelection {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FeatureSelection::All => serializer.serialize_str("all"),
            FeatureSelection::Off => serializer.serialize_str("off"),
            FeatureSelection::List(set) => set.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for FeatureSelection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SelectionVisitor;

        impl<'de> Visitor<'de> for SelectionVisitor {
            type Value = FeatureSelection;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"all\", \"off\" or a list of feature names")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                match value {
                    "all" => Ok(FeatureSelection::All),
                    "off" => Ok(FeatureSelection::Off),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                KvmFeatures::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(FeatureSelection::List)
            }
        }

        deserializer.deserialize_any(SelectionVisitor)
    }
}

fn default_true() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

/// The PV configuration of a VM (`cpus.kvm_pv` in the VM config). Every field is optional;
/// the defaults are the `shared` preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PvConfig {
    /// Which KVM features to offer (default `all`).
    #[serde(default)]
    pub features: FeatureSelection,
    /// The `dedicated` preset: the realtime hint, disable every exit the host allows (unless
    /// `disable_exits` says otherwise), no `pv_unhalt`. For vCPUs that own a host CPU each.
    #[serde(default)]
    pub dedicated: bool,
    /// Exits to disable; `None` means the preset's choice (none for shared, all the host
    /// allows for dedicated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_exits: Option<DisableExits>,
    /// The VM's maximum halt-poll time in ns; `None` keeps the kernel's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt_poll_ns: Option<u32>,
    /// Let the guest use only the PV features its CPUID advertises (default on).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub enforce_pv_cpuid: bool,
}

impl Default for PvConfig {
    fn default() -> Self {
        Self::shared()
    }
}

impl PvConfig {
    /// The default preset: everything the host supports, no exits disabled, no hints.
    pub fn shared() -> Self {
        Self {
            features: FeatureSelection::All,
            dedicated: false,
            disable_exits: None,
            halt_poll_ns: None,
            enforce_pv_cpuid: true,
        }
    }

    /// The preset for vCPUs that each own a host CPU.
    pub fn dedicated() -> Self {
        Self {
            dedicated: true,
            ..Self::shared()
        }
    }

    /// Resolves the configuration against the host into the effective PV state.
    ///
    /// Explicit contradictions are errors naming the field, the value and the rule; what the
    /// host lacks and what a preset implies is dropped or adjusted and reported in the
    /// result. `vmm_backs` names the [`KvmFeatures::VMM_PROVIDED`] features the VMM
    /// implements.
    pub fn resolve(
        &self,
        host: &HostPv,
        vmm_backs: KvmFeatures,
    ) -> Result<EffectivePv, ConfigError> {
        let mut notes = Vec::new();
        let disable_exits = match self.disable_exits {
            Some(exits) => {
                let refused = exits - host.allowed_exits;
                if !refused.is_empty() {
                    return Err(ConfigError::ExitsRefused {
                        value: exits,
                        refused,
                        allowed: host.allowed_exits,
                    });
                }
                exits
            }
            None if self.dedicated => {
                let refused = DisableExits::all() - host.allowed_exits;
                if !refused.is_empty() {
                    notes.push(format!(
                        "dedicated: the host does not allow disabling [{refused}] exits; they stay enabled"
                    ));
                }
                host.allowed_exits
            }
            None => DisableExits::empty(),
        };

        let hints = if self.dedicated && self.features != FeatureSelection::Off {
            KvmHints::REALTIME
        } else {
            KvmHints::empty()
        };
        // A conflict that a preset brings in is resolved (dropped and reported); one the
        // explicit configuration states is refused, naming the rule.
        let from_preset = |rule: Rule| match rule {
            Rule::NotUnderRealtimeHint => true,
            Rule::NoPvUnhaltWithHltExitsDisabled => self.disable_exits.is_none(),
            _ => false,
        };
        if let FeatureSelection::List(list) = self.features {
            if let Some(rule) = Rule::ALL
                .into_iter()
                .find(|r| !r.violation(list, disable_exits, hints).is_empty() && !from_preset(*r))
            {
                return Err(ConfigError::Contradiction {
                    field: "features",
                    value: self.features.to_string(),
                    rule,
                });
            }
        }

        if self.halt_poll_ns.is_some() && !host.halt_poll {
            return Err(ConfigError::HaltPollUnsupported);
        }

        // What the presets drop is in `dropped`, each with its rule (the glue warns of each).
        let negotiated = negotiate(NegotiationInput {
            requested: self.features.requested(),
            host: host.backable(),
            vmm_backs,
            disable_exits,
            hints,
        });
        let enforce_pv_cpuid = self.enforce_pv_cpuid && host.enforce_pv_cpuid;
        if self.enforce_pv_cpuid && !host.enforce_pv_cpuid {
            notes.push(
                "enforce_pv_cpuid: the host lacks KVM_CAP_ENFORCE_PV_FEATURE_CPUID; not enforced"
                    .to_owned(),
            );
        }
        Ok(EffectivePv {
            leaves: self.features != FeatureSelection::Off,
            features: negotiated.features,
            hints,
            disable_exits,
            halt_poll_ns: self.halt_poll_ns,
            enforce_pv_cpuid,
            dropped: negotiated.dropped,
            notes,
        })
    }
}

/// The PV state a VM gets: what is on, what was dropped and why, and how presets were
/// resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectivePv {
    /// Whether the KVM leaves are present at all (`false` for `features: off`).
    pub leaves: bool,
    /// The advertised features.
    pub features: KvmFeatures,
    /// The advertised hints.
    pub hints: KvmHints,
    /// The disabled exits.
    pub disable_exits: DisableExits,
    /// The VM's halt-poll limit, if set.
    pub halt_poll_ns: Option<u32>,
    /// Whether PV CPUID enforcement is on.
    pub enforce_pv_cpuid: bool,
    /// Requested features that are not advertised, with the reason.
    pub dropped: Vec<Dropped>,
    /// How presets and host limits were resolved, in words.
    pub notes: Vec<String>,
}

/// A configuration that cannot be applied; each names the field, the value and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The explicit configuration violates a dependency rule.
    #[error("{field}={value}: {}", rule.explain())]
    Contradiction {
        /// The field holding the offending value.
        field: &'static str,
        /// The value as given.
        value: String,
        /// The violated rule.
        rule: Rule,
    },
    /// The host cannot disable some requested exits.
    #[error(
        "disable_exits=[{value}]: the host cannot disable [{refused}] (it allows [{allowed}])"
    )]
    ExitsRefused {
        /// The requested exits.
        value: DisableExits,
        /// Those the host refuses.
        refused: DisableExits,
        /// Those the host allows.
        allowed: DisableExits,
    },
    /// `halt_poll_ns` on a host without per-VM halt polling.
    #[error("halt_poll_ns: the host's KVM lacks per-VM halt polling (KVM_CAP_HALT_POLL)")]
    HaltPollUnsupported,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpuid::DropReason;

    /// The lab's L1 KVM: everything QEMU sees (0x1007efb) plus the full exit mask.
    fn host() -> HostPv {
        HostPv {
            features: KvmFeatures::from_bits_truncate(0x0100_7efb),
            allowed_exits: DisableExits::all(),
            halt_poll: true,
            enforce_pv_cpuid: true,
            binary_stats: true,
            hyperv: true,
            hyperv_cpuid: Some(crate::hyperv::HvCpuidSource::System),
            hyperv_synic: Some(crate::hyperv::SynicCap::Synic2),
            exit_hypercall_mask: 1 << 12,
            msr_filter: true,
        }
    }

    #[test]
    fn shared_default_takes_what_the_host_has() {
        let eff = PvConfig::default()
            .resolve(&host(), KvmFeatures::empty())
            .expect("valid");
        assert_eq!(eff.features.bits(), 0x0100_7efb);
        assert!(eff.leaves);
        assert_eq!(eff.hints, KvmHints::empty());
        assert_eq!(eff.disable_exits, DisableExits::empty());
        assert!(eff.enforce_pv_cpuid);
        let dropped: Vec<_> = eff.dropped.iter().map(|d| d.feature.as_str()).collect();
        assert_eq!(
            dropped,
            ["msi_ext_dest_id", "hc_map_gpa_range", "migration_control"]
        );
        assert!(eff.dropped.iter().all(|d| d.reason == DropReason::VmmLacks));

        // Without a user-space MAP_GPA_RANGE exit the host cannot back hc_map_gpa_range.
        let mut h = host();
        h.exit_hypercall_mask = 0;
        let eff = PvConfig::default()
            .resolve(&h, KvmFeatures::HC_MAP_GPA_RANGE)
            .expect("valid");
        let reason = eff
            .dropped
            .iter()
            .find(|d| d.feature == "hc_map_gpa_range")
            .map(|d| d.reason);
        assert_eq!(reason, Some(DropReason::HostLacks));
    }

    #[test]
    fn vmm_backed_features_need_the_vmm() {
        // The host's supported CPUID lacks msi_ext_dest_id (KVM never reports it); the VMM
        // alone decides it.
        let h = host();
        let eff = PvConfig::default()
            .resolve(&h, KvmFeatures::empty())
            .expect("valid");
        assert!(!eff.features.contains(KvmFeatures::MSI_EXT_DEST_ID));
        assert!(eff
            .dropped
            .iter()
            .any(|d| d.feature == "msi_ext_dest_id" && d.reason == DropReason::VmmLacks));
        let eff = PvConfig::default()
            .resolve(&h, KvmFeatures::MSI_EXT_DEST_ID)
            .expect("valid");
        assert_eq!(eff.features.bits(), 0x0100_fefb, "Cloud Hypervisor's set");
    }

    #[test]
    fn dedicated_matches_qemu_cpu_pm() {
        let eff = PvConfig::dedicated()
            .resolve(&host(), KvmFeatures::empty())
            .expect("valid");
        // QEMU with kvm-hint-dedicated=on and -overcommit cpu-pm=on: 0x1007e7b, hints 0x1,
        // which still offers pv_tlb_flush and pv_sched_yield, both of which the guest turns
        // off under the realtime hint: we drop them, and say why.
        assert_eq!(eff.features.bits(), 0x0100_7e7b & !0x2200);
        assert_eq!(eff.hints, KvmHints::REALTIME);
        assert_eq!(eff.disable_exits, DisableExits::all());
        let reason = |name: &str| {
            eff.dropped
                .iter()
                .find(|d| d.feature == name)
                .map(|d| d.reason)
        };
        assert_eq!(
            reason("pv_unhalt"),
            Some(DropReason::Rule(Rule::NoPvUnhaltWithHltExitsDisabled))
        );
        for name in ["pv_tlb_flush", "pv_sched_yield"] {
            assert_eq!(
                reason(name),
                Some(DropReason::Rule(Rule::NotUnderRealtimeHint)),
                "{name}"
            );
        }
    }

    #[test]
    fn dedicated_on_a_host_that_refuses_mwait() {
        let mut h = host();
        h.allowed_exits = DisableExits::HLT | DisableExits::PAUSE | DisableExits::CSTATE;
        let eff = PvConfig::dedicated()
            .resolve(&h, KvmFeatures::empty())
            .expect("valid");
        assert_eq!(eff.disable_exits, h.allowed_exits);
        assert!(
            eff.notes.iter().any(|n| n.contains("[mwait]")),
            "{:?}",
            eff.notes
        );

        h.allowed_exits = DisableExits::PAUSE;
        let eff = PvConfig::dedicated()
            .resolve(&h, KvmFeatures::empty())
            .expect("valid");
        assert!(!eff.features.contains(KvmFeatures::PV_UNHALT));
        assert!(eff.dropped.iter().any(|d| d.feature == "pv_unhalt"
            && d.reason == DropReason::Rule(Rule::NotUnderRealtimeHint)));
    }

    #[test]
    fn off_means_no_leaves_and_no_hint() {
        let cfg = PvConfig {
            features: FeatureSelection::Off,
            dedicated: true,
            ..PvConfig::shared()
        };
        let eff = cfg.resolve(&host(), KvmFeatures::empty()).expect("valid");
        assert!(!eff.leaves);
        assert!(eff.features.is_empty());
        assert!(eff.hints.is_empty());
    }

    #[test]
    fn explicit_list_drops_only_what_the_host_lacks() {
        let mut h = host();
        h.features.remove(KvmFeatures::PV_SEND_IPI);
        let cfg = PvConfig {
            features: FeatureSelection::parse("[steal_time,pv_tlb_flush,pv_send_ipi]")
                .expect("names"),
            ..PvConfig::shared()
        };
        let eff = cfg.resolve(&h, KvmFeatures::empty()).expect("valid");
        assert_eq!(
            eff.features,
            KvmFeatures::STEAL_TIME | KvmFeatures::PV_TLB_FLUSH
        );
        assert_eq!(eff.dropped.len(), 1);
        assert_eq!(eff.dropped[0].feature, "pv_send_ipi");
        assert_eq!(eff.dropped[0].message, "the host's KVM does not support it");
    }

    #[test]
    fn host_dropping_steal_time_drops_tlb_flush_by_rule() {
        let mut h = host();
        h.features.remove(KvmFeatures::STEAL_TIME);
        let eff = PvConfig::default()
            .resolve(&h, KvmFeatures::empty())
            .expect("valid");
        assert!(!eff.features.contains(KvmFeatures::PV_TLB_FLUSH));
        let reason = eff
            .dropped
            .iter()
            .find(|d| d.feature == "pv_tlb_flush")
            .map(|d| d.reason);
        assert_eq!(
            reason,
            Some(DropReason::Rule(Rule::PvTlbFlushNeedsStealTime))
        );
    }

    #[test]
    fn contradictions_are_errors_naming_field_value_and_rule() {
        let cfg = PvConfig {
            features: FeatureSelection::List(KvmFeatures::PV_TLB_FLUSH),
            ..PvConfig::shared()
        };
        let err = cfg
            .resolve(&host(), KvmFeatures::empty())
            .expect_err("needs steal_time");
        assert_eq!(
            err.to_string(),
            "features=[pv_tlb_flush]: pv_tlb_flush needs steal_time: the flush request travels in the steal-time record"
        );

        let cfg = PvConfig {
            features: FeatureSelection::List(KvmFeatures::PV_UNHALT | KvmFeatures::STEAL_TIME),
            disable_exits: Some(DisableExits::HLT),
            ..PvConfig::shared()
        };
        let err = cfg
            .resolve(&host(), KvmFeatures::empty())
            .expect_err("unhalt with hlt");
        assert!(matches!(
            err,
            ConfigError::Contradiction {
                rule: Rule::NoPvUnhaltWithHltExitsDisabled,
                ..
            }
        ));
        assert!(
            err.to_string()
                .starts_with("features=[steal_time,pv_unhalt]: "),
            "{err}"
        );
    }

    #[test]
    fn features_the_guest_cannot_use_are_refused_naming_both() {
        for (list, message) in [
            (
                "[async_pf_int]",
                "features=[async_pf_int]: async_pf_int needs async_pf: the guest enables it through MSR_KVM_ASYNC_PF_EN, which KVM refuses without async_pf",
            ),
            ("[async_pf]", "features=[async_pf]: async_pf needs async_pf_int: "),
            ("[async_pf,async_pf_int,async_pf_vmexit]", ""),
            ("[async_pf_vmexit,async_pf]", "async_pf needs async_pf_int"),
            ("[pv_sched_yield]", "features=[pv_sched_yield]: pv_sched_yield needs steal_time: "),
            ("[steal_time,pv_sched_yield]", ""),
            ("[clocksource_stable]", "clocksource_stable needs clocksource or clocksource2"),
            ("[clocksource2,clocksource_stable]", ""),
        ] {
            let cfg = PvConfig {
                features: FeatureSelection::parse(list).expect("names"),
                ..PvConfig::shared()
            };
            match cfg.resolve(&host(), KvmFeatures::empty()) {
                Ok(eff) => {
                    assert!(message.is_empty(), "{list} accepted: {eff:?}");
                    assert_eq!(eff.features, cfg.features.requested(), "{list}");
                }
                Err(err) => assert!(
                    !message.is_empty() && err.to_string().contains(message),
                    "{list}: {err}"
                ),
            }
        }
    }

    #[test]
    fn dedicated_drops_what_the_realtime_hint_turns_off_and_says_so() {
        let cfg = PvConfig {
            features: FeatureSelection::parse(
                "[steal_time,pv_tlb_flush,pv_sched_yield,pv_send_ipi]",
            )
            .expect("names"),
            dedicated: true,
            ..PvConfig::shared()
        };
        let eff = cfg
            .resolve(&host(), KvmFeatures::empty())
            .expect("a preset conflict resolves");
        assert_eq!(
            eff.features,
            KvmFeatures::STEAL_TIME | KvmFeatures::PV_SEND_IPI
        );
        assert_eq!(eff.hints, KvmHints::REALTIME);
        for name in ["pv_tlb_flush", "pv_sched_yield"] {
            let d = eff.dropped.iter().find(|d| d.feature == name).expect(name);
            assert_eq!(d.reason, DropReason::Rule(Rule::NotUnderRealtimeHint));
            assert!(d.message.contains("realtime hint"), "{}", d.message);
        }
        // Without the preset the same list is taken whole.
        let eff = PvConfig {
            dedicated: false,
            ..cfg
        }
        .resolve(&host(), KvmFeatures::empty())
        .expect("valid");
        assert!(eff.dropped.is_empty() && eff.hints.is_empty());
    }

    #[test]
    fn preset_conflict_is_resolved_and_reported() {
        let cfg = PvConfig {
            features: FeatureSelection::List(KvmFeatures::PV_UNHALT | KvmFeatures::STEAL_TIME),
            dedicated: true,
            ..PvConfig::shared()
        };
        let eff = cfg
            .resolve(&host(), KvmFeatures::empty())
            .expect("preset conflict resolves");
        assert_eq!(eff.features, KvmFeatures::STEAL_TIME);
        assert_eq!(
            eff.dropped
                .iter()
                .map(|d| (d.feature.as_str(), d.reason))
                .collect::<Vec<_>>(),
            [(
                "pv_unhalt",
                DropReason::Rule(Rule::NoPvUnhaltWithHltExitsDisabled)
            )]
        );
    }

    #[test]
    fn refused_exits_and_missing_halt_poll_are_errors() {
        let mut h = host();
        h.allowed_exits = DisableExits::HLT | DisableExits::PAUSE | DisableExits::CSTATE;
        let cfg = PvConfig {
            disable_exits: Some(DisableExits::MWAIT | DisableExits::HLT),
            ..PvConfig::shared()
        };
        let err = cfg
            .resolve(&h, KvmFeatures::empty())
            .expect_err("mwait refused");
        assert_eq!(
            err.to_string(),
            "disable_exits=[mwait,hlt]: the host cannot disable [mwait] (it allows [hlt,pause,cstate])"
        );
        h.halt_poll = false;
        let cfg = PvConfig {
            halt_poll_ns: Some(0),
            ..PvConfig::shared()
        };
        assert_eq!(
            cfg.resolve(&h, KvmFeatures::empty()),
            Err(ConfigError::HaltPollUnsupported)
        );
    }

    #[test]
    fn enforcement_follows_the_host() {
        let mut h = host();
        h.enforce_pv_cpuid = false;
        let eff = PvConfig::default()
            .resolve(&h, KvmFeatures::empty())
            .expect("valid");
        assert!(!eff.enforce_pv_cpuid);
        assert!(eff.notes.iter().any(|n| n.starts_with("enforce_pv_cpuid")));
        let cfg = PvConfig {
            enforce_pv_cpuid: false,
            ..PvConfig::shared()
        };
        assert!(
            !cfg.resolve(&host(), KvmFeatures::empty())
                .expect("valid")
                .enforce_pv_cpuid
        );
    }

    #[test]
    fn json_defaults_and_round_trip() {
        let cfg: PvConfig = serde_json::from_str("{}").expect("all optional");
        assert_eq!(cfg, PvConfig::shared());
        assert_eq!(
            serde_json::to_string(&cfg).expect("serializes"),
            r#"{"features":"all","dedicated":false}"#
        );
        let json = r#"{"features":["steal_time","pv_send_ipi"],"dedicated":true,"disable_exits":["hlt"],"halt_poll_ns":0,"enforce_pv_cpuid":false}"#;
        let cfg: PvConfig = serde_json::from_str(json).expect("parses");
        assert_eq!(
            cfg.features,
            FeatureSelection::List(KvmFeatures::STEAL_TIME | KvmFeatures::PV_SEND_IPI)
        );
        assert_eq!(cfg.disable_exits, Some(DisableExits::HLT));
        assert_eq!(cfg.halt_poll_ns, Some(0));
        assert_eq!(serde_json::to_string(&cfg).expect("serializes"), json);
        let off: PvConfig = serde_json::from_str(r#"{"features":"off"}"#).expect("parses");
        assert_eq!(off.features, FeatureSelection::Off);
    }

    #[test]
    fn json_rejects_bad_input() {
        for (json, needle) in [
            (r#"{"featurez":"all"}"#, "unknown field `featurez`"),
            (r#"{"features":"some"}"#, "\"all\", \"off\" or a list"),
            (
                r#"{"features":["steal_time","warp_drive"]}"#,
                "unknown feature `warp_drive`",
            ),
            (r#"{"features":7}"#, "\"all\", \"off\" or a list"),
            (r#"{"disable_exits":["nap"]}"#, "unknown exit `nap`"),
            (r#"{"halt_poll_ns":-1}"#, "invalid value"),
            (r#"{"halt_poll_ns":4294967296}"#, "invalid value"),
            (r#"{"dedicated":"yes"}"#, "invalid type"),
        ] {
            let err = serde_json::from_str::<PvConfig>(json).expect_err(json);
            assert!(err.to_string().contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn selection_parses_cli_spellings() {
        assert_eq!(FeatureSelection::parse("all"), Ok(FeatureSelection::All));
        assert_eq!(FeatureSelection::parse("off"), Ok(FeatureSelection::Off));
        assert_eq!(
            FeatureSelection::parse("[]"),
            Ok(FeatureSelection::List(KvmFeatures::empty()))
        );
        let sel = FeatureSelection::parse("[pv_send_ipi, steal_time]").expect("valid");
        assert_eq!(sel.to_string(), "[steal_time,pv_send_ipi]");
        assert_eq!(FeatureSelection::parse(&sel.to_string()), Ok(sel));
        let err = FeatureSelection::parse("[steal_time,tlb]").expect_err("unknown");
        assert_eq!(err.name, "tlb");
        assert!(
            err.to_string().contains("valid: clocksource, nop_io_delay"),
            "{err}"
        );
    }
}
