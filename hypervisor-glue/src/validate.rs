//! Validating a [`CpusConfig`] against itself and against the host: Cloud Hypervisor's CPU
//! rules, then the PV configuration resolved into the [`EffectivePv`] the VM will get.
//!
//! Errors name the `--cpus` key, the value and the reason. Whatever a preset implies, the
//! host lacks, or the machine makes doubtful is resolved and reported as a warning, never
//! dropped silently.

use pv_features::config::{ConfigError, EffectivePv, FeatureSelection, PvConfig};
use pv_features::cpuid::{DropReason, KvmFeatures, Rule};
use pv_features::host::HostPv;
use serde::{Deserialize, Serialize};

use crate::cpus::{CpuTopology, CpusConfig};

/// A configuration that validated, with the PV state it resolves to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validated {
    /// The PV state the VM gets (its `notes` say how presets were resolved).
    pub effective: EffectivePv,
    /// What the user should read before the VM starts: doubtful placements, requested PV
    /// features the VM will not get, and how presets were resolved.
    pub warnings: Vec<String>,
}

/// A `--cpus` configuration that cannot run; each names the key, the value and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpusError {
    /// `boot=0`.
    #[error("--cpus boot=0: a VM needs at least one vCPU at boot")]
    NoBootVcpus,
    /// `max` below `boot`.
    #[error("--cpus max={max}: below boot={boot}; max must be at least boot")]
    MaxBelowBoot {
        /// vCPUs at boot.
        boot: u32,
        /// The maximum.
        max: u32,
    },
    /// A topology part is zero.
    #[error("--cpus topology={topology}: every part must be at least 1")]
    TopologyZeroPart {
        /// The topology.
        topology: CpuTopology,
    },
    /// The topology does not describe exactly `max` vCPUs.
    #[error("--cpus topology={topology}: describes {product} vCPUs (threads_per_core*cores_per_die*dies_per_package*packages) but max={max}; they must be equal")]
    TopologyCount {
        /// The topology.
        topology: CpuTopology,
        /// The number of vCPUs it describes.
        product: u64,
        /// The maximum.
        max: u32,
    },
    /// An affinity entry for a vCPU the VM can never have.
    #[error("--cpus affinity: vCPU {vcpu} does not exist; vCPU ids are below max={max}")]
    AffinityVcpu {
        /// The vCPU id.
        vcpu: u32,
        /// The maximum.
        max: u32,
    },
    /// `kvm_hyperv=on` on a host without Hyper-V emulation, or without the ioctl that reports
    /// its leaves.
    #[error("--cpus kvm_hyperv=on: the host's KVM lacks {missing}")]
    HypervUnsupported {
        /// What the host lacks, naming the capability.
        missing: &'static str,
    },
    /// The PV configuration contradicts itself or the host.
    #[error("--cpus {key}={value}: {reason}")]
    Pv {
        /// The `--cpus` key (`kvm_pv`, `disable_exits`, `halt_poll_ns`).
        key: &'static str,
        /// The value as the key spells it.
        value: String,
        /// Why it cannot be applied.
        reason: String,
        /// pv-features' error (its `field` uses the JSON names).
        error: ConfigError,
    },
}

/// The parts of a [`ConfigError`] for a message: the JSON field, the `--cpus` key, the value
/// and the reason (without repeating the field and value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PvErrorParts {
    pub field: &'static str,
    pub key: &'static str,
    pub value: String,
    pub reason: String,
}

pub(crate) fn describe_pv_error(cfg: &PvConfig, err: &ConfigError) -> PvErrorParts {
    match err {
        ConfigError::Contradiction { value, rule, .. } => {
            let mut reason = rule.explain().to_owned();
            if *rule == Rule::NoPvUnhaltWithHltExitsDisabled {
                if let Some(exits) = cfg.disable_exits {
                    reason.push_str(&format!(" (disable_exits=[{exits}])"));
                }
            }
            PvErrorParts {
                field: "features",
                key: "kvm_pv",
                value: value.clone(),
                reason,
            }
        }
        ConfigError::ExitsRefused {
            value,
            refused,
            allowed,
        } => PvErrorParts {
            field: "disable_exits",
            key: "disable_exits",
            value: format!("[{value}]"),
            reason: format!("the host cannot disable [{refused}] (it allows [{allowed}])"),
        },
        ConfigError::HaltPollUnsupported => PvErrorParts {
            field: "halt_poll_ns",
            key: "halt_poll_ns",
            value: cfg
                .halt_poll_ns
                .map_or_else(String::new, |ns| ns.to_string()),
            reason: "the host's KVM lacks per-VM halt polling (KVM_CAP_HALT_POLL)".to_owned(),
        },
    }
}

impl CpusConfig {
    /// Validates the configuration as Cloud Hypervisor's `VmConfig::validate` does for its
    /// CPU part (at least one boot vCPU, `max` not below `boot`, a topology of non-zero
    /// parts whose product is `max`, affinity only for existing vCPUs, `kvm_hyperv` only
    /// where the host has `KVM_CAP_HYPERV` and `KVM_GET_SUPPORTED_HV_CPUID`), then resolves
    /// `kvm_pv` against the host.
    ///
    /// `host_cpus` is the number of host CPUs the VM may use (0 skips the checks that need
    /// it); `vmm_backs` names the [`KvmFeatures::VMM_PROVIDED`] features the VMM implements.
    pub fn validate(
        &self,
        host: &HostPv,
        host_cpus: usize,
        vmm_backs: KvmFeatures,
    ) -> Result<Validated, CpusError> {
        if self.boot_vcpus == 0 {
            return Err(CpusError::NoBootVcpus);
        }
        if self.max_vcpus < self.boot_vcpus {
            return Err(CpusError::MaxBelowBoot {
                boot: self.boot_vcpus,
                max: self.max_vcpus,
            });
        }
        if let Some(topology) = self.topology {
            let parts = [
                topology.threads_per_core,
                topology.cores_per_die,
                topology.dies_per_package,
                topology.packages,
            ];
            if parts.contains(&0) {
                return Err(CpusError::TopologyZeroPart { topology });
            }
            let product: u64 = parts.iter().map(|p| u64::from(*p)).product();
            if product != u64::from(self.max_vcpus) {
                return Err(CpusError::TopologyCount {
                    topology,
                    product,
                    max: self.max_vcpus,
                });
            }
        }
        let mut warnings = Vec::new();
        for entry in self.affinity.iter().flatten() {
            if entry.vcpu >= self.max_vcpus {
                return Err(CpusError::AffinityVcpu {
                    vcpu: entry.vcpu,
                    max: self.max_vcpus,
                });
            }
            if host_cpus > 0 {
                if let Some(cpu) = entry.host_cpus.iter().find(|cpu| **cpu >= host_cpus) {
                    warnings.push(format!(
                        "affinity: vCPU {} names host CPU {cpu}, but the host has {host_cpus} CPUs",
                        entry.vcpu
                    ));
                }
            }
        }
        if self.kvm_hyperv {
            if let Some(missing) = host.hyperv_lacks() {
                return Err(CpusError::HypervUnsupported { missing });
            }
        }

        let mut validated = validate_pv(
            &self.kvm_pv,
            PvPlacement {
                boot_vcpus: self.boot_vcpus,
                max_vcpus: self.max_vcpus,
                kvm_hyperv: self.kvm_hyperv,
                host_cpus,
            },
            host,
            vmm_backs,
        )?;
        warnings.append(&mut validated.warnings);
        validated.warnings = warnings;
        Ok(validated)
    }
}

/// What the PV resolution needs to know of the VM's CPUs besides the PV settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PvPlacement {
    /// vCPUs at boot.
    pub boot_vcpus: u32,
    /// Most vCPUs the VM can have.
    pub max_vcpus: u32,
    /// Whether the Hyper-V block holds 0x40000000 (the KVM leaves then go to 0x40000100).
    pub kvm_hyperv: bool,
    /// Host CPUs the VM may use (0 skips the checks that need it).
    pub host_cpus: usize,
}

/// Resolves a VM's PV settings against the host: the PV part of [`CpusConfig::validate`],
/// for a VMM that validates the rest of its CPU configuration itself (Cloud Hypervisor's
/// `VmConfig::validate`). Errors name the `--cpus` key, the value and the reason; the
/// warnings say what the VM will not get and how presets were resolved.
///
/// **Cloud Hypervisor:** `vmm/src/vm.rs`, `Vm::new`, once the hypervisor is known and
/// before the KVM VM is configured ([`crate::hooks::vm_created`]).
pub fn validate_pv(
    pv: &PvConfig,
    cpus: PvPlacement,
    host: &HostPv,
    vmm_backs: KvmFeatures,
) -> Result<Validated, CpusError> {
    let PvPlacement {
        boot_vcpus,
        max_vcpus,
        kvm_hyperv,
        host_cpus,
    } = cpus;
    let mut warnings = Vec::new();
    let effective = pv.resolve(host, vmm_backs).map_err(|error| {
        let parts = describe_pv_error(pv, &error);
        CpusError::Pv {
            key: parts.key,
            value: parts.value,
            reason: parts.reason,
            error,
        }
    })?;

    if pv.dedicated && host_cpus > 0 {
        let boot = usize::try_from(boot_vcpus).unwrap_or(usize::MAX);
        let max = usize::try_from(max_vcpus).unwrap_or(usize::MAX);
        if boot > host_cpus {
            warnings.push(format!(
                "dedicated=on: {boot} vCPUs at boot on {host_cpus} host CPUs: the vCPUs cannot each own a host CPU, and with exits disabled a waiting vCPU keeps its host CPU busy"
            ));
        } else if max > host_cpus {
            warnings.push(format!(
                "dedicated=on: max={max} vCPUs on {host_cpus} host CPUs: once vCPUs are hot-plugged they cannot each own a host CPU"
            ));
        }
    }
    // A feature asked for by name, or one that `dedicated` takes away, is worth a warning;
    // what `all` finds missing on the host only a debug line.
    let listed = matches!(pv.features, FeatureSelection::List(_));
    for dropped in &effective.dropped {
        let by_preset = matches!(
            dropped.reason,
            DropReason::Rule(Rule::NotUnderRealtimeHint | Rule::NoPvUnhaltWithHltExitsDisabled)
        );
        let line = format!(
            "kvm_pv: {} is not offered: {}",
            dropped.feature, dropped.message
        );
        if listed || by_preset {
            warnings.push(line);
        } else {
            log::debug!("{line}");
        }
    }
    warnings.extend(effective.notes.iter().cloned());
    if kvm_hyperv && effective.leaves {
        log::info!("kvm_hyperv=on: the KVM PV leaves go beside the Hyper-V block, at 0x40000100");
    }
    for warning in &warnings {
        // Returned to the caller, who shows them; logged for the record only.
        log::debug!("--cpus warning: {warning}");
    }
    Ok(Validated {
        effective,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use pv_features::cpuid::KvmHints;
    use pv_features::exits::DisableExits;

    use super::*;

    /// The lab's L1 KVM: what QEMU sees (0x1007efb), every exit, Hyper-V, halt polling.
    fn host() -> HostPv {
        HostPv {
            features: KvmFeatures::from_bits_truncate(0x0100_7efb),
            allowed_exits: DisableExits::all(),
            halt_poll: true,
            enforce_pv_cpuid: true,
            binary_stats: true,
            hyperv: true,
            hyperv_cpuid: Some(pv_features::hyperv::HvCpuidSource::System),
            hyperv_synic: Some(pv_features::hyperv::SynicCap::Synic2),
            exit_hypercall_mask: 1 << 12,
            msr_filter: true,
        }
    }

    fn validate(cpus: &str) -> Result<Validated, CpusError> {
        CpusConfig::parse(cpus)
            .unwrap_or_else(|e| panic!("{cpus}: {e}"))
            .validate(&host(), 8, KvmFeatures::MSI_EXT_DEST_ID)
    }

    #[test]
    fn vmm_provided_features_follow_the_vmm() {
        // The lab host reports 0x1007efb, as KVM does: none of the VMM-provided features.
        let plain = CpusConfig::default();
        let eff = plain
            .validate(&host(), 8, KvmFeatures::empty())
            .expect("valid")
            .effective;
        assert_eq!(eff.features.bits(), 0x0100_7efb, "QEMU's -cpu host set");
        let reasons: Vec<_> = eff
            .dropped
            .iter()
            .map(|d| (d.feature.as_str(), d.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                ("msi_ext_dest_id", pv_features::cpuid::DropReason::VmmLacks),
                ("hc_map_gpa_range", pv_features::cpuid::DropReason::VmmLacks),
                (
                    "migration_control",
                    pv_features::cpuid::DropReason::VmmLacks
                ),
            ]
        );
        // MAP_GPA_RANGE needs the host to send that hypercall to user space.
        let mut h = host();
        h.exit_hypercall_mask = 0;
        let eff = plain
            .validate(&h, 8, KvmFeatures::VMM_PROVIDED)
            .expect("valid")
            .effective;
        assert!(eff
            .features
            .contains(KvmFeatures::MSI_EXT_DEST_ID | KvmFeatures::MIGRATION_CONTROL));
        assert!(eff.dropped.iter().any(|d| d.feature == "hc_map_gpa_range"
            && d.reason == pv_features::cpuid::DropReason::HostLacks));
    }

    #[test]
    fn valid_configs_resolve() {
        let v = validate("boot=4").expect("valid");
        assert_eq!(
            v.effective.features.bits(),
            0x0100_fefb,
            "Cloud Hypervisor's set"
        );
        assert!(v.warnings.is_empty(), "{:?}", v.warnings);

        for ok in [
            "boot=1",
            "boot=2,max=4",
            "boot=8,topology=2:2:1:2",
            "boot=2,max=8,topology=2:2:1:2",
            "boot=2,affinity=[0@[0,2],1@[1,3]]",
            "boot=2,max=4,affinity=[3@[7]]",
            "kvm_hyperv=on",
            "boot=8,dedicated=on",
            "kvm_pv=off",
            "kvm_pv=[steal_time,pv_tlb_flush],disable_exits=[hlt]",
            "halt_poll_ns=0",
        ] {
            assert!(validate(ok).is_ok(), "{ok}: {:?}", validate(ok));
        }
    }

    /// One case per error message.
    #[test]
    fn errors_name_key_value_and_reason() {
        for (input, message) in [
            ("boot=0", "--cpus boot=0: a VM needs at least one vCPU at boot"),
            (
                "boot=4,max=2",
                "--cpus max=2: below boot=4; max must be at least boot",
            ),
            (
                "boot=2,topology=2:0:1:1",
                "--cpus topology=2:0:1:1: every part must be at least 1",
            ),
            (
                "boot=8,topology=2:2:1:1",
                "--cpus topology=2:2:1:1: describes 4 vCPUs (threads_per_core*cores_per_die*dies_per_package*packages) but max=8; they must be equal",
            ),
            (
                "boot=2,topology=65535:65535:65535:65535",
                "--cpus topology=65535:65535:65535:65535: describes 18445618199572250625 vCPUs (threads_per_core*cores_per_die*dies_per_package*packages) but max=2; they must be equal",
            ),
            (
                "boot=2,affinity=[0@[0],2@[1]]",
                "--cpus affinity: vCPU 2 does not exist; vCPU ids are below max=2",
            ),
            (
                "kvm_pv=[pv_tlb_flush]",
                "--cpus kvm_pv=[pv_tlb_flush]: pv_tlb_flush needs steal_time: the flush request travels in the steal-time record",
            ),
            (
                "kvm_pv=[steal_time,pv_unhalt],disable_exits=[hlt,pause]",
                "--cpus kvm_pv=[steal_time,pv_unhalt]: pv_unhalt is not advertised when HLT exits are disabled: a halted vCPU stays in guest mode (disable_exits=[hlt,pause])",
            ),
        ] {
            let err = validate(input).expect_err(input);
            assert_eq!(err.to_string(), message, "{input}");
        }
    }

    #[test]
    fn host_limits_are_errors_naming_the_key() {
        let mut h = host();
        h.hyperv = false;
        h.allowed_exits = DisableExits::HLT | DisableExits::PAUSE | DisableExits::CSTATE;
        h.halt_poll = false;
        let check = |cpus: &str, message: &str| {
            let err = CpusConfig::parse(cpus)
                .expect("parses")
                .validate(&h, 8, KvmFeatures::empty())
                .expect_err(cpus);
            assert_eq!(err.to_string(), message, "{cpus}");
            err
        };
        check(
            "kvm_hyperv=on",
            "--cpus kvm_hyperv=on: the host's KVM lacks Hyper-V emulation (KVM_CAP_HYPERV)",
        );
        let err = check(
            "disable_exits=[mwait,hlt]",
            "--cpus disable_exits=[mwait,hlt]: the host cannot disable [mwait] (it allows [hlt,pause,cstate])",
        );
        assert!(matches!(
            err,
            CpusError::Pv {
                key: "disable_exits",
                error: ConfigError::ExitsRefused { .. },
                ..
            }
        ));
        check(
            "halt_poll_ns=50000",
            "--cpus halt_poll_ns=50000: the host's KVM lacks per-VM halt polling (KVM_CAP_HALT_POLL)",
        );
    }

    #[test]
    fn kvm_hyperv_needs_the_leaves_ioctl_but_not_synic() {
        let config = CpusConfig::parse("boot=2,kvm_hyperv=on").expect("parses");
        let mut h = host();
        h.hyperv_cpuid = None;
        let err = config
            .validate(&h, 8, KvmFeatures::empty())
            .expect_err("no ioctl");
        assert_eq!(
            err.to_string(),
            "--cpus kvm_hyperv=on: the host's KVM lacks KVM_GET_SUPPORTED_HV_CPUID (neither KVM_CAP_SYS_HYPERV_CPUID nor KVM_CAP_HYPERV_CPUID)"
        );
        assert!(matches!(err, CpusError::HypervUnsupported { .. }));
        // SynIC is optional: without it the leaves simply do not offer it.
        h.hyperv_cpuid = Some(pv_features::hyperv::HvCpuidSource::Vcpu);
        h.hyperv_synic = None;
        assert!(config.validate(&h, 8, KvmFeatures::empty()).is_ok());
        // kvm_hyperv=off never asks.
        h.hyperv = false;
        assert!(CpusConfig::parse("boot=2")
            .expect("parses")
            .validate(&h, 8, KvmFeatures::empty())
            .is_ok());
    }

    #[test]
    fn dedicated_with_more_vcpus_than_host_cpus_warns() {
        let v = validate("boot=12,dedicated=on").expect("valid");
        assert!(
            v.warnings.iter().any(|w| w.starts_with(
                "dedicated=on: 12 vCPUs at boot on 8 host CPUs: the vCPUs cannot each own a host CPU"
            )),
            "{:?}",
            v.warnings
        );
        let v = validate("boot=4,max=16,dedicated=on").expect("valid");
        assert!(
            v.warnings.iter().any(|w| w
                == "dedicated=on: max=16 vCPUs on 8 host CPUs: once vCPUs are hot-plugged they cannot each own a host CPU"),
            "{:?}",
            v.warnings
        );
        // Exactly as many vCPUs as host CPUs, an unknown host size, or shared vCPUs: quiet
        // about the placement.
        let v = validate("boot=8,dedicated=on").expect("valid");
        assert!(
            !v.warnings.iter().any(|w| w.contains("host CPUs")),
            "{:?}",
            v.warnings
        );
        let v = CpusConfig::parse("boot=64,dedicated=on")
            .expect("parses")
            .validate(&host(), 0, KvmFeatures::empty())
            .expect("valid");
        assert!(
            !v.warnings.iter().any(|w| w.contains("host CPUs")),
            "{:?}",
            v.warnings
        );
        assert!(validate("boot=64").expect("valid").warnings.is_empty());
    }

    #[test]
    fn preset_conflicts_are_resolved_and_reported() {
        // The dedicated preset disables HLT exits, which drops an explicitly listed pv_unhalt.
        let v = validate("kvm_pv=[steal_time,pv_unhalt],dedicated=on").expect("resolved");
        assert_eq!(v.effective.features, KvmFeatures::STEAL_TIME);
        assert_eq!(v.effective.hints, KvmHints::REALTIME);
        assert_eq!(v.effective.disable_exits, DisableExits::all());
        assert!(
            v.warnings
                .iter()
                .any(|w| w.starts_with("kvm_pv: pv_unhalt is not offered")),
            "{:?}",
            v.warnings
        );
        // With HLT exits kept, pv_unhalt still goes under the realtime hint, and says so.
        let v = validate("dedicated=on,disable_exits=[pause]").expect("resolved");
        assert!(!v.effective.features.contains(KvmFeatures::PV_UNHALT));
        assert!(
            v.warnings.iter().any(|w| w.contains("realtime hint")),
            "{:?}",
            v.warnings
        );
    }

    #[test]
    fn explicit_features_the_host_lacks_are_warned_about() {
        let mut h = host();
        h.features.remove(KvmFeatures::PV_SEND_IPI);
        let v = CpusConfig::parse("kvm_pv=[steal_time,pv_send_ipi]")
            .expect("parses")
            .validate(&h, 8, KvmFeatures::empty())
            .expect("valid");
        assert_eq!(v.effective.features, KvmFeatures::STEAL_TIME);
        assert_eq!(
            v.warnings,
            ["kvm_pv: pv_send_ipi is not offered: the host's KVM does not support it"]
        );
        // With `all`, what the host lacks is expected and not a warning.
        let v = CpusConfig::parse("boot=1")
            .expect("parses")
            .validate(&h, 8, KvmFeatures::empty())
            .expect("valid");
        assert!(!v.effective.dropped.is_empty());
        assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    }

    #[test]
    fn affinity_beyond_the_host_warns() {
        let v = validate("boot=2,affinity=[0@[0,9],1@[1]]").expect("valid");
        assert_eq!(
            v.warnings,
            ["affinity: vCPU 0 names host CPU 9, but the host has 8 CPUs"]
        );
    }

    #[test]
    fn enforcement_the_host_lacks_is_reported() {
        let mut h = host();
        h.enforce_pv_cpuid = false;
        let v = CpusConfig::default()
            .validate(&h, 8, KvmFeatures::empty())
            .expect("valid");
        assert!(!v.effective.enforce_pv_cpuid);
        assert!(
            v.warnings
                .iter()
                .any(|w| w.starts_with("enforce_pv_cpuid:")),
            "{:?}",
            v.warnings
        );
    }
}
