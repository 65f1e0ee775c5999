//! `CpusConfig`: Cloud Hypervisor's `--cpus` option and its JSON schema, extended with the
//! KVM PV keys of [`PvConfig`].
//!
//! For every existing key the parsed struct and its JSON are what Cloud Hypervisor produces
//! (field names, defaults, field order, `topology`/`affinity` only when given). The PV
//! settings live in `kvm_pv`, which is left out of the JSON while it holds the defaults, so a
//! configuration without PV settings serializes exactly as Cloud Hypervisor's does, and
//! Cloud Hypervisor's JSON parses with the PV defaults.

use std::fmt;
use std::str::FromStr;

use pv_features::config::PvConfig;
use serde::{Deserialize, Serialize};

use crate::help;
use crate::option_parser::{
    parse_string_list, parse_tuple_list, OptionError, OptionParser, MAX_INTEGER_LIST_LEN,
};
use crate::pv_keys;

/// The option name used in messages.
pub const CPUS_OPTION: &str = "--cpus";
/// vCPUs at boot when `boot` is not given (Cloud Hypervisor's `DEFAULT_VCPUS`).
pub const DEFAULT_VCPUS: u32 = 1;
/// The guest's physical address width when `max_phys_bits` is not given (Cloud
/// Hypervisor's `DEFAULT_MAX_PHYS_BITS`: PVH boot limits the guest to 46 bits).
pub const DEFAULT_MAX_PHYS_BITS: u8 = 46;

/// The guest CPU topology (`topology=<threads_per_core>:<cores_per_die>:<dies_per_package>:<packages>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuTopology {
    /// Threads per core.
    pub threads_per_core: u16,
    /// Cores per die.
    pub cores_per_die: u16,
    /// Dies per package.
    pub dies_per_package: u16,
    /// Packages (sockets).
    pub packages: u16,
}

impl FromStr for CpuTopology {
    type Err = String;

    /// Exactly four `:`-separated 16-bit integers, as Cloud Hypervisor parses them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let [t, c, d, p] = parts.as_slice() else {
            return Err(format!(
                "expected four parts <threads_per_core>:<cores_per_die>:<dies_per_package>:<packages>, got {}",
                parts.len()
            ));
        };
        let part = |name: &str, text: &str| {
            text.parse::<u16>()
                .map_err(|err| format!("{name} `{text}` is not an integer 0-65535 ({err})"))
        };
        Ok(Self {
            threads_per_core: part("threads_per_core", t)?,
            cores_per_die: part("cores_per_die", c)?,
            dies_per_package: part("dies_per_package", d)?,
            packages: part("packages", p)?,
        })
    }
}

impl fmt::Display for CpuTopology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.threads_per_core, self.cores_per_die, self.dies_per_package, self.packages
        )
    }
}

/// The host CPUs one vCPU may run on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuAffinity {
    /// The vCPU id.
    pub vcpu: u32,
    /// The host CPUs, in the order given.
    pub host_cpus: Vec<usize>,
}

/// CPU features to enable beyond the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuFeatures {
    /// Intel AMX (`features=[amx]`).
    #[serde(default)]
    pub amx: bool,
}

/// Linux core scheduling for the vCPU threads (`core_scheduling=vm|vcpu|off`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoreScheduling {
    /// One cookie for all vCPUs of the VM: they may share a core with each other only.
    #[default]
    Vm,
    /// One cookie per vCPU: no two vCPUs share a core.
    Vcpu,
    /// No core scheduling.
    Off,
}

impl FromStr for CoreScheduling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_lowercase().as_str() {
            "vm" => Ok(Self::Vm),
            "vcpu" => Ok(Self::Vcpu),
            "off" => Ok(Self::Off),
            _ => Err("expected vm, vcpu or off".to_owned()),
        }
    }
}

impl fmt::Display for CoreScheduling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Vm => "vm",
            Self::Vcpu => "vcpu",
            Self::Off => "off",
        })
    }
}

/// The CPU profile for live-migration compatibility (`profile=host`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CpuProfile {
    /// The host's CPU model as is.
    #[default]
    Host,
}

impl FromStr for CpuProfile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_lowercase().as_str() {
            "host" => Ok(Self::Host),
            _ => Err("expected host".to_owned()),
        }
    }
}

fn default_max_phys_bits() -> u8 {
    DEFAULT_MAX_PHYS_BITS
}

fn default_true() -> bool {
    true
}

/// The vCPU configuration of a VM (`cpus` in the VM config, `--cpus` on the command line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpusConfig {
    /// vCPUs at boot (`boot`).
    pub boot_vcpus: u32,
    /// Most vCPUs the VM can have (`max`).
    pub max_vcpus: u32,
    /// The guest topology (`topology`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<CpuTopology>,
    /// KVM's Hyper-V emulation (`kvm_hyperv`).
    #[serde(default)]
    pub kvm_hyperv: bool,
    /// The guest's physical address width (`max_phys_bits`).
    #[serde(default = "default_max_phys_bits")]
    pub max_phys_bits: u8,
    /// vCPU pinning (`affinity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Vec<CpuAffinity>>,
    /// Extra CPU features (`features`).
    #[serde(default)]
    pub features: CpuFeatures,
    /// Nested virtualization (`nested`).
    #[serde(default = "default_true")]
    pub nested: bool,
    /// Core scheduling (`core_scheduling`).
    #[serde(default)]
    pub core_scheduling: CoreScheduling,
    /// The CPU profile (`profile`).
    #[serde(default)]
    pub profile: CpuProfile,
    /// The KVM PV settings (`kvm_pv`, `dedicated`, `disable_exits`, `halt_poll_ns`,
    /// `enforce_pv_cpuid` on the command line); left out of the JSON while default.
    #[serde(default, skip_serializing_if = "pv_keys::is_default")]
    pub kvm_pv: PvConfig,
}

impl Default for CpusConfig {
    fn default() -> Self {
        Self {
            boot_vcpus: DEFAULT_VCPUS,
            max_vcpus: DEFAULT_VCPUS,
            topology: None,
            kvm_hyperv: false,
            max_phys_bits: DEFAULT_MAX_PHYS_BITS,
            affinity: None,
            features: CpuFeatures::default(),
            nested: true,
            core_scheduling: CoreScheduling::Vm,
            profile: CpuProfile::Host,
            kvm_pv: PvConfig::default(),
        }
    }
}

/// A configuration that the `--cpus` syntax cannot express (only JSON can build one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrintError {
    /// The value has no `--cpus` spelling that parses back to it.
    #[error("--cpus {key}: cannot be written in --cpus syntax: {reason}")]
    NotExpressible {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

impl CpusConfig {
    /// Parses a `--cpus` string. Every key Cloud Hypervisor knows gives what Cloud
    /// Hypervisor's parser gives; the PV keys fill [`CpusConfig::kvm_pv`]. Like Cloud
    /// Hypervisor, this accepts `boot=0` and `max` below `boot`; [`CpusConfig::validate`]
    /// refuses them.
    pub fn parse(cpus: &str) -> Result<Self, OptionError> {
        let mut p = OptionParser::new(CPUS_OPTION, &help::cpus_key_names());
        p.parse(cpus)?;
        let u32_text = "an unsigned 32-bit integer";
        let boot_vcpus = p.integer::<u32>("boot", u32_text)?.unwrap_or(DEFAULT_VCPUS);
        let max_vcpus = p.integer::<u32>("max", u32_text)?.unwrap_or(boot_vcpus);
        let topology = p.convert("topology", |v| v.parse::<CpuTopology>())?;
        let kvm_hyperv = p.toggle("kvm_hyperv")?.unwrap_or(false);
        let max_phys_bits = p
            .integer::<u8>("max_phys_bits", "an unsigned 8-bit integer")?
            .unwrap_or(DEFAULT_MAX_PHYS_BITS);
        let affinity = p
            .convert_raw("affinity", |v| parse_tuple_list(v, MAX_INTEGER_LIST_LEN))?
            .map(|list| {
                list.into_iter()
                    .map(|(vcpu, host_cpus)| CpuAffinity { vcpu, host_cpus })
                    .collect()
            });
        let profile = p
            .convert("profile", |v| v.parse::<CpuProfile>())?
            .unwrap_or_default();
        let features = p
            .convert_raw("features", parse_features)?
            .unwrap_or_default();
        let nested = p.toggle("nested")?.unwrap_or(true);
        let core_scheduling = p
            .convert("core_scheduling", |v| v.parse::<CoreScheduling>())?
            .unwrap_or_default();
        let kvm_pv = pv_keys::read(CPUS_OPTION, |key| p.get(key))?;
        Ok(Self {
            boot_vcpus,
            max_vcpus,
            topology,
            kvm_hyperv,
            max_phys_bits,
            affinity,
            features,
            nested,
            core_scheduling,
            profile,
            kvm_pv,
        })
    }

    /// Writes the configuration in `--cpus` syntax: `boot` and `max` always, every other key
    /// only when it differs from its default. [`CpusConfig::parse`] gives back the same
    /// configuration, and printing that again gives the same string. Fails only for what the
    /// syntax cannot say: an empty `affinity` list, a vCPU without host CPUs, or more than
    /// [`MAX_INTEGER_LIST_LEN`] host CPUs for one vCPU.
    pub fn to_option_string(&self) -> Result<String, PrintError> {
        let mut parts = vec![
            format!("boot={}", self.boot_vcpus),
            format!("max={}", self.max_vcpus),
        ];
        if let Some(topology) = &self.topology {
            parts.push(format!("topology={topology}"));
        }
        if self.kvm_hyperv {
            parts.push("kvm_hyperv=on".to_owned());
        }
        if self.max_phys_bits != DEFAULT_MAX_PHYS_BITS {
            parts.push(format!("max_phys_bits={}", self.max_phys_bits));
        }
        if let Some(affinity) = &self.affinity {
            parts.push(format!("affinity={}", affinity_string(affinity)?));
        }
        if self.features.amx {
            parts.push("features=[amx]".to_owned());
        }
        if !self.nested {
            parts.push("nested=off".to_owned());
        }
        if self.core_scheduling != CoreScheduling::Vm {
            parts.push(format!("core_scheduling={}", self.core_scheduling));
        }
        parts.extend(pv_keys::write(&self.kvm_pv));
        Ok(parts.join(","))
    }
}

/// `features=[amx]`: only `amx`, spelled exactly so, as Cloud Hypervisor on x86_64.
fn parse_features(value: &str) -> Result<CpuFeatures, String> {
    let mut features = CpuFeatures::default();
    for name in parse_string_list(value)? {
        match name.as_str() {
            "amx" => features.amx = true,
            _ => {
                return Err(format!(
                    "invalid feature `{name}` in the features list; valid: amx"
                ))
            }
        }
    }
    Ok(features)
}

/// `[0@[0-3,8],1@[4]]`, with runs of three or more consecutive host CPUs as ranges.
fn affinity_string(affinity: &[CpuAffinity]) -> Result<String, PrintError> {
    let not_expressible = |reason: String| PrintError::NotExpressible {
        key: "affinity",
        reason,
    };
    if affinity.is_empty() {
        return Err(not_expressible("the list is empty".to_owned()));
    }
    let mut tuples = Vec::with_capacity(affinity.len());
    for entry in affinity {
        if entry.host_cpus.is_empty() {
            return Err(not_expressible(format!(
                "vCPU {} has no host CPUs",
                entry.vcpu
            )));
        }
        if entry.host_cpus.len() > MAX_INTEGER_LIST_LEN {
            return Err(not_expressible(format!(
                "vCPU {} has more than {MAX_INTEGER_LIST_LEN} host CPUs",
                entry.vcpu
            )));
        }
        tuples.push(format!("{}@[{}]", entry.vcpu, compress(&entry.host_cpus)));
    }
    Ok(format!("[{}]", tuples.join(",")))
}

/// Writes a list with each run of at least three consecutive ascending values as `A-B`; it
/// expands back to the same list.
fn compress(list: &[usize]) -> String {
    let mut items = Vec::new();
    let mut i = 0;
    while i < list.len() {
        let mut j = i;
        while j + 1 < list.len() && list[j].checked_add(1) == Some(list[j + 1]) {
            j += 1;
        }
        if j - i >= 2 {
            items.push(format!("{}-{}", list[i], list[j]));
        } else {
            items.extend(list[i..=j].iter().map(usize::to_string));
        }
        i = j + 1;
    }
    items.join(",")
}

#[cfg(test)]
mod tests {
    use pv_features::config::FeatureSelection;
    use pv_features::cpuid::KvmFeatures;
    use pv_features::exits::DisableExits;

    use super::*;

    fn cfg(boot: u32, max: u32) -> CpusConfig {
        CpusConfig {
            boot_vcpus: boot,
            max_vcpus: max,
            ..CpusConfig::default()
        }
    }

    fn json(c: &CpusConfig) -> String {
        serde_json::to_string(c).expect("serializes")
    }

    /// Cloud Hypervisor's documented and tested `--cpus` examples, each with the struct and
    /// the exact JSON its own parser produces.
    #[test]
    fn cloud_hypervisor_examples_parse_to_its_structs_and_json() {
        let tail = r#""kvm_hyperv":false,"max_phys_bits":46,"features":{"amx":false},"nested":true,"core_scheduling":"Vm","profile":"Host"}"#;
        let cases: Vec<(&str, CpusConfig, String)> = vec![
            ("", CpusConfig::default(), format!(r#"{{"boot_vcpus":1,"max_vcpus":1,{tail}"#)),
            ("boot=1", cfg(1, 1), format!(r#"{{"boot_vcpus":1,"max_vcpus":1,{tail}"#)),
            ("boot=2", cfg(2, 2), format!(r#"{{"boot_vcpus":2,"max_vcpus":2,{tail}"#)),
            ("boot=1,max=2", cfg(1, 2), format!(r#"{{"boot_vcpus":1,"max_vcpus":2,{tail}"#)),
            ("max=3", cfg(1, 3), format!(r#"{{"boot_vcpus":1,"max_vcpus":3,{tail}"#)),
            (
                "boot=8,topology=2:2:1:2",
                CpusConfig {
                    topology: Some(CpuTopology {
                        threads_per_core: 2,
                        cores_per_die: 2,
                        dies_per_package: 1,
                        packages: 2,
                    }),
                    ..cfg(8, 8)
                },
                format!(
                    r#"{{"boot_vcpus":8,"max_vcpus":8,"topology":{{"threads_per_core":2,"cores_per_die":2,"dies_per_package":1,"packages":2}},{tail}"#
                ),
            ),
            (
                "boot=2,topology=1:1:2:1",
                CpusConfig {
                    topology: Some(CpuTopology {
                        threads_per_core: 1,
                        cores_per_die: 1,
                        dies_per_package: 2,
                        packages: 1,
                    }),
                    ..cfg(2, 2)
                },
                format!(
                    r#"{{"boot_vcpus":2,"max_vcpus":2,"topology":{{"threads_per_core":1,"cores_per_die":1,"dies_per_package":2,"packages":1}},{tail}"#
                ),
            ),
            (
                "boot=1,kvm_hyperv=on",
                CpusConfig {
                    kvm_hyperv: true,
                    ..cfg(1, 1)
                },
                r#"{"boot_vcpus":1,"max_vcpus":1,"kvm_hyperv":true,"max_phys_bits":46,"features":{"amx":false},"nested":true,"core_scheduling":"Vm","profile":"Host"}"#.to_owned(),
            ),
            (
                "boot=2,affinity=[0@[0,2],1@[1,3]]",
                CpusConfig {
                    affinity: Some(vec![
                        CpuAffinity { vcpu: 0, host_cpus: vec![0, 2] },
                        CpuAffinity { vcpu: 1, host_cpus: vec![1, 3] },
                    ]),
                    ..cfg(2, 2)
                },
                r#"{"boot_vcpus":2,"max_vcpus":2,"kvm_hyperv":false,"max_phys_bits":46,"affinity":[{"vcpu":0,"host_cpus":[0,2]},{"vcpu":1,"host_cpus":[1,3]}],"features":{"amx":false},"nested":true,"core_scheduling":"Vm","profile":"Host"}"#.to_owned(),
            ),
            (
                "boot=3,affinity=[0@[2,3],1@[0,1]]",
                CpusConfig {
                    affinity: Some(vec![
                        CpuAffinity { vcpu: 0, host_cpus: vec![2, 3] },
                        CpuAffinity { vcpu: 1, host_cpus: vec![0, 1] },
                    ]),
                    ..cfg(3, 3)
                },
                r#"{"boot_vcpus":3,"max_vcpus":3,"kvm_hyperv":false,"max_phys_bits":46,"affinity":[{"vcpu":0,"host_cpus":[2,3]},{"vcpu":1,"host_cpus":[0,1]}],"features":{"amx":false},"nested":true,"core_scheduling":"Vm","profile":"Host"}"#.to_owned(),
            ),
            (
                "boot=2,affinity=[0@[0-4],1@[1-3,255]]",
                CpusConfig {
                    affinity: Some(vec![
                        CpuAffinity { vcpu: 0, host_cpus: vec![0, 1, 2, 3, 4] },
                        CpuAffinity { vcpu: 1, host_cpus: vec![1, 2, 3, 255] },
                    ]),
                    ..cfg(2, 2)
                },
                r#"{"boot_vcpus":2,"max_vcpus":2,"kvm_hyperv":false,"max_phys_bits":46,"affinity":[{"vcpu":0,"host_cpus":[0,1,2,3,4]},{"vcpu":1,"host_cpus":[1,2,3,255]}],"features":{"amx":false},"nested":true,"core_scheduling":"Vm","profile":"Host"}"#.to_owned(),
            ),
            (
                "boot=1,core_scheduling=vm",
                cfg(1, 1),
                format!(r#"{{"boot_vcpus":1,"max_vcpus":1,{tail}"#),
            ),
            (
                "boot=1,core_scheduling=vcpu",
                CpusConfig {
                    core_scheduling: CoreScheduling::Vcpu,
                    ..cfg(1, 1)
                },
                r#"{"boot_vcpus":1,"max_vcpus":1,"kvm_hyperv":false,"max_phys_bits":46,"features":{"amx":false},"nested":true,"core_scheduling":"Vcpu","profile":"Host"}"#.to_owned(),
            ),
            (
                "boot=1,core_scheduling=OFF",
                CpusConfig {
                    core_scheduling: CoreScheduling::Off,
                    ..cfg(1, 1)
                },
                r#"{"boot_vcpus":1,"max_vcpus":1,"kvm_hyperv":false,"max_phys_bits":46,"features":{"amx":false},"nested":true,"core_scheduling":"Off","profile":"Host"}"#.to_owned(),
            ),
            (
                "features=amx",
                CpusConfig {
                    features: CpuFeatures { amx: true },
                    ..cfg(1, 1)
                },
                r#"{"boot_vcpus":1,"max_vcpus":1,"kvm_hyperv":false,"max_phys_bits":46,"features":{"amx":true},"nested":true,"core_scheduling":"Vm","profile":"Host"}"#.to_owned(),
            ),
            (
                "features=[amx]",
                CpusConfig {
                    features: CpuFeatures { amx: true },
                    ..cfg(1, 1)
                },
                r#"{"boot_vcpus":1,"max_vcpus":1,"kvm_hyperv":false,"max_phys_bits":46,"features":{"amx":true},"nested":true,"core_scheduling":"Vm","profile":"Host"}"#.to_owned(),
            ),
            (
                "nested=off",
                CpusConfig {
                    nested: false,
                    ..cfg(1, 1)
                },
                r#"{"boot_vcpus":1,"max_vcpus":1,"kvm_hyperv":false,"max_phys_bits":46,"features":{"amx":false},"nested":false,"core_scheduling":"Vm","profile":"Host"}"#.to_owned(),
            ),
            ("nested=on", cfg(1, 1), format!(r#"{{"boot_vcpus":1,"max_vcpus":1,{tail}"#)),
            (
                "max_phys_bits=39",
                CpusConfig {
                    max_phys_bits: 39,
                    ..cfg(1, 1)
                },
                r#"{"boot_vcpus":1,"max_vcpus":1,"kvm_hyperv":false,"max_phys_bits":39,"features":{"amx":false},"nested":true,"core_scheduling":"Vm","profile":"Host"}"#.to_owned(),
            ),
            ("profile=host", cfg(1, 1), format!(r#"{{"boot_vcpus":1,"max_vcpus":1,{tail}"#)),
            ("profile=Host", cfg(1, 1), format!(r#"{{"boot_vcpus":1,"max_vcpus":1,{tail}"#)),
            // Parsing accepts what validation refuses later.
            ("boot=0", cfg(0, 0), format!(r#"{{"boot_vcpus":0,"max_vcpus":0,{tail}"#)),
            ("boot=4,max=2", cfg(4, 2), format!(r#"{{"boot_vcpus":4,"max_vcpus":2,{tail}"#)),
            // Plain values lose their quotes; later keys win; empty values are absent.
            (
                "core_scheduling=\"Vcpu\"",
                CpusConfig {
                    core_scheduling: CoreScheduling::Vcpu,
                    ..cfg(1, 1)
                },
                r#"{"boot_vcpus":1,"max_vcpus":1,"kvm_hyperv":false,"max_phys_bits":46,"features":{"amx":false},"nested":true,"core_scheduling":"Vcpu","profile":"Host"}"#.to_owned(),
            ),
            ("boot=\"2\"", cfg(2, 2), format!(r#"{{"boot_vcpus":2,"max_vcpus":2,{tail}"#)),
            ("boot=1,boot=2", cfg(2, 2), format!(r#"{{"boot_vcpus":2,"max_vcpus":2,{tail}"#)),
            ("boot=,max=", cfg(1, 1), format!(r#"{{"boot_vcpus":1,"max_vcpus":1,{tail}"#)),
            ("boot= 2 ", cfg(2, 2), format!(r#"{{"boot_vcpus":2,"max_vcpus":2,{tail}"#)),
        ];
        for (input, expected, expected_json) in cases {
            let parsed = CpusConfig::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(parsed, expected, "{input}");
            assert_eq!(json(&parsed), expected_json, "{input}");
            let back: CpusConfig = serde_json::from_str(&expected_json).expect("round trip");
            assert_eq!(back, expected, "{input}");
        }
    }

    /// What Cloud Hypervisor's parser rejects, with our message for each.
    #[test]
    fn what_cloud_hypervisor_rejects_is_rejected_with_key_and_text() {
        for (input, message) in [
            (
                "boot=8,topology=2:2:1",
                "--cpus topology=2:2:1: expected four parts <threads_per_core>:<cores_per_die>:<dies_per_package>:<packages>, got 3",
            ),
            (
                "boot=8,topology=2:2:1:x",
                "--cpus topology=2:2:1:x: packages `x` is not an integer 0-65535 (invalid digit found in string)",
            ),
            (
                "topology=1:1:1:65536",
                "--cpus topology=1:1:1:65536: packages `65536` is not an integer 0-65535 (number too large to fit in target type)",
            ),
            (
                "topology=1: 1:1:1",
                "--cpus topology=1: 1:1:1: cores_per_die ` 1` is not an integer 0-65535 (invalid digit found in string)",
            ),
            (
                "boot=1,core_scheduling=invalid",
                "--cpus core_scheduling=invalid: expected vm, vcpu or off",
            ),
            (
                "boot=x",
                "--cpus boot=x: expected an unsigned 32-bit integer (invalid digit found in string)",
            ),
            (
                "boot=-1",
                "--cpus boot=-1: expected an unsigned 32-bit integer (invalid digit found in string)",
            ),
            (
                "max=4294967296",
                "--cpus max=4294967296: expected an unsigned 32-bit integer (number too large to fit in target type)",
            ),
            (
                "max_phys_bits=256",
                "--cpus max_phys_bits=256: expected an unsigned 8-bit integer (number too large to fit in target type)",
            ),
            (
                "kvm_hyperv=yes",
                "--cpus kvm_hyperv=yes: expected on or off (or true or false)",
            ),
            (
                "kvm_hyperv=\"on\"",
                "--cpus kvm_hyperv=\"on\": expected on or off (or true or false)",
            ),
            ("nested=2", "--cpus nested=2: expected on or off (or true or false)"),
            (
                "features=[avx512]",
                "--cpus features=[avx512]: invalid feature `avx512` in the features list; valid: amx",
            ),
            (
                "features=[AMX]",
                "--cpus features=[AMX]: invalid feature `AMX` in the features list; valid: amx",
            ),
            (
                "features=\"amx\"",
                "--cpus features=\"amx\": invalid feature `\"amx\"` in the features list; valid: amx",
            ),
            (
                "features=[]",
                "--cpus features=[]: invalid feature `` in the features list; valid: amx",
            ),
            (
                "features=[amx, amx]",
                "--cpus features=[amx, amx]: invalid feature ` amx` in the features list; valid: amx",
            ),
            ("profile=skylake", "--cpus profile=skylake: expected host"),
            (
                "affinity=0@[0-4]",
                "--cpus affinity=0@[0-4]: expected one pair of enclosing brackets: [<vcpu>@[<host cpus>],...]",
            ),
            (
                "affinity=[]",
                "--cpus affinity=[]: `` is not <vcpu>@[<host cpus>]",
            ),
            (
                "affinity=[0@[3-1]]",
                "--cpus affinity=[0@[3-1]]: vCPU 0: range `3-1` must go upward (A-B with A below B)",
            ),
            (
                "affinity=[0@[0,2],1]",
                "--cpus affinity=[0@[0,2],1]: `1` is not <vcpu>@[<host cpus>]",
            ),
            (
                "boot=2,foo=bar",
                "unknown key `foo` in --cpus; valid keys: boot, max, topology, kvm_hyperv, max_phys_bits, affinity, features, nested, core_scheduling, profile, kvm_pv, dedicated, disable_exits, halt_poll_ns, enforce_pv_cpuid",
            ),
            ("boot=2,max", "invalid --cpus syntax in `max`: `max` needs a value: max=<value>"),
            (
                "affinity=[0@[0,2]",
                "invalid --cpus syntax in `affinity=[0@[0,2]`: a `[` is not closed",
            ),
        ] {
            let err = CpusConfig::parse(input).expect_err(input);
            assert_eq!(err.to_string(), message, "{input}");
        }
        let err = CpusConfig::parse("boot=2, max=3").expect_err("space before key");
        assert!(matches!(err, OptionError::UnknownKey { ref key, .. } if key == " max"));
    }

    #[test]
    fn pv_keys_parse_into_pv_config() {
        let cases: Vec<(&str, PvConfig)> = vec![
            ("boot=2", PvConfig::shared()),
            ("kvm_pv=all", PvConfig::shared()),
            (
                "kvm_pv=off",
                PvConfig {
                    features: FeatureSelection::Off,
                    ..PvConfig::shared()
                },
            ),
            (
                "kvm_pv=[steal_time,pv_tlb_flush,pv_send_ipi]",
                PvConfig {
                    features: FeatureSelection::List(
                        KvmFeatures::STEAL_TIME
                            | KvmFeatures::PV_TLB_FLUSH
                            | KvmFeatures::PV_SEND_IPI,
                    ),
                    ..PvConfig::shared()
                },
            ),
            (
                "kvm_pv=steal_time",
                PvConfig {
                    features: FeatureSelection::List(KvmFeatures::STEAL_TIME),
                    ..PvConfig::shared()
                },
            ),
            (
                "kvm_pv=[]",
                PvConfig {
                    features: FeatureSelection::List(KvmFeatures::empty()),
                    ..PvConfig::shared()
                },
            ),
            ("dedicated=on", PvConfig::dedicated()),
            ("dedicated=TRUE", PvConfig::dedicated()),
            ("dedicated=off", PvConfig::shared()),
            (
                "disable_exits=[hlt,pause]",
                PvConfig {
                    disable_exits: Some(DisableExits::HLT | DisableExits::PAUSE),
                    ..PvConfig::shared()
                },
            ),
            (
                "disable_exits=mwait",
                PvConfig {
                    disable_exits: Some(DisableExits::MWAIT),
                    ..PvConfig::shared()
                },
            ),
            (
                "dedicated=on,disable_exits=[]",
                PvConfig {
                    disable_exits: Some(DisableExits::empty()),
                    ..PvConfig::dedicated()
                },
            ),
            (
                "halt_poll_ns=200000",
                PvConfig {
                    halt_poll_ns: Some(200_000),
                    ..PvConfig::shared()
                },
            ),
            (
                "halt_poll_ns=0",
                PvConfig {
                    halt_poll_ns: Some(0),
                    ..PvConfig::shared()
                },
            ),
            (
                "enforce_pv_cpuid=off",
                PvConfig {
                    enforce_pv_cpuid: false,
                    ..PvConfig::shared()
                },
            ),
        ];
        for (input, expected) in cases {
            let parsed = CpusConfig::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(parsed.kvm_pv, expected, "{input}");
        }
    }

    #[test]
    fn pv_key_errors_name_key_value_and_valid_names() {
        for (input, message) in [
            (
                "kvm_pv=[steal_time,tlb]",
                "--cpus kvm_pv=[steal_time,tlb]: unknown feature `tlb`; valid: clocksource, nop_io_delay, clocksource2, async_pf, steal_time, pv_eoi, pv_unhalt, pv_tlb_flush, async_pf_vmexit, pv_send_ipi, poll_control, pv_sched_yield, async_pf_int, msi_ext_dest_id, hc_map_gpa_range, migration_control, clocksource_stable; or all, or off",
            ),
            (
                "kvm_pv=ALL",
                "--cpus kvm_pv=ALL: unknown feature `ALL`; valid: clocksource, nop_io_delay, clocksource2, async_pf, steal_time, pv_eoi, pv_unhalt, pv_tlb_flush, async_pf_vmexit, pv_send_ipi, poll_control, pv_sched_yield, async_pf_int, msi_ext_dest_id, hc_map_gpa_range, migration_control, clocksource_stable; or all, or off",
            ),
            (
                "disable_exits=[hlt,halt]",
                "--cpus disable_exits=[hlt,halt]: unknown exit `halt`; valid: mwait, hlt, pause, cstate",
            ),
            (
                "disable_exits=all",
                "--cpus disable_exits=all: unknown exit `all`; valid: mwait, hlt, pause, cstate",
            ),
            (
                "halt_poll_ns=-5",
                "--cpus halt_poll_ns=-5: expected nanoseconds as an unsigned 32-bit integer (invalid digit found in string)",
            ),
            (
                "halt_poll_ns=4294967296",
                "--cpus halt_poll_ns=4294967296: expected nanoseconds as an unsigned 32-bit integer (number too large to fit in target type)",
            ),
            (
                "halt_poll_ns=200us",
                "--cpus halt_poll_ns=200us: expected nanoseconds as an unsigned 32-bit integer (invalid digit found in string)",
            ),
            ("dedicated=yes", "--cpus dedicated=yes: expected on or off (or true or false)"),
            (
                "enforce_pv_cpuid=maybe",
                "--cpus enforce_pv_cpuid=maybe: expected on or off (or true or false)",
            ),
        ] {
            let err = CpusConfig::parse(input).expect_err(input);
            assert_eq!(err.to_string(), message, "{input}");
        }
    }

    #[test]
    fn json_without_kvm_pv_is_cloud_hypervisors() {
        // Cloud Hypervisor's JSON for `--cpus boot=2`, exactly.
        let ch = r#"{"boot_vcpus":2,"max_vcpus":2,"kvm_hyperv":false,"max_phys_bits":46,"features":{"amx":false},"nested":true,"core_scheduling":"Vm","profile":"Host"}"#;
        let parsed: CpusConfig = serde_json::from_str(ch).expect("parses");
        assert_eq!(parsed, cfg(2, 2));
        assert_eq!(parsed.kvm_pv, PvConfig::default());
        assert_eq!(json(&parsed), ch);
        assert_eq!(json(&CpusConfig::parse("boot=2").expect("parses")), ch);

        // Only the two vCPU counts are required; everything else has its default.
        let minimal: CpusConfig =
            serde_json::from_str(r#"{"boot_vcpus":2,"max_vcpus":4}"#).expect("parses");
        assert_eq!(minimal, cfg(2, 4));
        for bad in [
            r#"{"max_vcpus":4}"#,
            r#"{"boot_vcpus":2}"#,
            r#"{"boot_vcpus":-1,"max_vcpus":1}"#,
            r#"{"boot_vcpus":1,"max_vcpus":1,"core_scheduling":"vm"}"#,
            r#"{"boot_vcpus":1,"max_vcpus":1,"profile":"host"}"#,
            r#"{"boot_vcpus":1,"max_vcpus":1,"kvm_pv":{"featurez":"all"}}"#,
            r#"{"boot_vcpus":1,"max_vcpus":1,"kvm_pv":{"features":["warp"]}}"#,
            r#"{"boot_vcpus":1,"max_vcpus":1,"topology":{"threads_per_core":1}}"#,
        ] {
            assert!(serde_json::from_str::<CpusConfig>(bad).is_err(), "{bad}");
        }
        // Like Cloud Hypervisor's, unknown top-level fields are ignored.
        let extra: CpusConfig =
            serde_json::from_str(r#"{"boot_vcpus":1,"max_vcpus":1,"future":1}"#).expect("parses");
        assert_eq!(extra, cfg(1, 1));
    }

    #[test]
    fn kvm_pv_appears_in_json_only_when_not_default() {
        let c = CpusConfig::parse(
            "boot=4,kvm_pv=[steal_time,pv_send_ipi],dedicated=on,disable_exits=[hlt],halt_poll_ns=0,enforce_pv_cpuid=off",
        )
        .expect("parses");
        let text = json(&c);
        assert_eq!(
            text,
            r#"{"boot_vcpus":4,"max_vcpus":4,"kvm_hyperv":false,"max_phys_bits":46,"features":{"amx":false},"nested":true,"core_scheduling":"Vm","profile":"Host","kvm_pv":{"features":["steal_time","pv_send_ipi"],"dedicated":true,"disable_exits":["hlt"],"halt_poll_ns":0,"enforce_pv_cpuid":false}}"#
        );
        let back: CpusConfig = serde_json::from_str(&text).expect("round trip");
        assert_eq!(back, c);
        let partial: CpusConfig =
            serde_json::from_str(r#"{"boot_vcpus":1,"max_vcpus":1,"kvm_pv":{"dedicated":true}}"#)
                .expect("every kvm_pv field optional");
        assert_eq!(partial.kvm_pv, PvConfig::dedicated());
    }

    #[test]
    fn printing_parses_back_to_the_same_config() {
        for input in [
            "",
            "boot=2",
            "boot=0",
            "boot=4,max=2",
            "boot=8,topology=2:2:1:2,kvm_hyperv=on,max_phys_bits=39",
            "boot=2,affinity=[0@[0,2],1@[1-3,5,7-9]],features=[amx],nested=off,core_scheduling=vcpu",
            "boot=2,affinity=[1@[3,2,1,1],0@[0,1],0@[4]]",
            "profile=host,core_scheduling=off",
            "kvm_pv=off,dedicated=on",
            "kvm_pv=[],disable_exits=[],halt_poll_ns=0",
            "kvm_pv=[pv_send_ipi,steal_time],disable_exits=[pause,hlt],enforce_pv_cpuid=off",
            "dedicated=on,halt_poll_ns=4294967295",
        ] {
            let parsed = CpusConfig::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            let printed = parsed.to_option_string().expect("expressible");
            let reparsed = CpusConfig::parse(&printed).unwrap_or_else(|e| panic!("{printed}: {e}"));
            assert_eq!(reparsed, parsed, "{input} -> {printed}");
            assert_eq!(reparsed.to_option_string().as_deref(), Ok(printed.as_str()));
        }
        assert_eq!(
            CpusConfig::parse("boot=2,affinity=[0@[0,1,2,3],1@[5,6,8]]")
                .map(|c| c.to_option_string())
                .expect("parses")
                .as_deref(),
            Ok("boot=2,max=2,affinity=[0@[0-3],1@[5,6,8]]")
        );
        assert_eq!(
            CpusConfig::default().to_option_string().as_deref(),
            Ok("boot=1,max=1")
        );
    }

    #[test]
    fn printing_refuses_what_the_syntax_cannot_say() {
        let mut c = cfg(1, 1);
        c.affinity = Some(Vec::new());
        assert_eq!(
            c.to_option_string().expect_err("empty").to_string(),
            "--cpus affinity: cannot be written in --cpus syntax: the list is empty"
        );
        c.affinity = Some(vec![CpuAffinity {
            vcpu: 3,
            host_cpus: Vec::new(),
        }]);
        assert_eq!(
            c.to_option_string().expect_err("no host cpus").to_string(),
            "--cpus affinity: cannot be written in --cpus syntax: vCPU 3 has no host CPUs"
        );
        c.affinity = Some(vec![CpuAffinity {
            vcpu: 0,
            host_cpus: vec![1; MAX_INTEGER_LIST_LEN + 1],
        }]);
        assert_eq!(
            c.to_option_string().expect_err("too many").to_string(),
            "--cpus affinity: cannot be written in --cpus syntax: vCPU 0 has more than 65536 host CPUs"
        );
    }

    #[test]
    fn the_help_example_parses() {
        let c = CpusConfig::parse(help::CPUS_EXAMPLE).expect("the help's example parses");
        assert!(c.kvm_pv.dedicated);
        assert_eq!(c.affinity.as_ref().map(Vec::len), Some(4));
        assert!(help::cpus_help_text().contains(help::CPUS_EXAMPLE));
    }

    #[test]
    fn hostile_input_never_panics_and_what_parses_prints_back() {
        let pieces = [
            "boot=",
            "max=",
            "topology=",
            "affinity=",
            "features=",
            "kvm_pv=",
            "disable_exits=",
            "halt_poll_ns=",
            "dedicated=",
            "nested=",
            "0",
            "4294967296",
            "1:1:1:1",
            "[",
            "]",
            "@",
            "-",
            ",",
            "\"",
            "amx",
            "all",
            "off",
            "on",
            "[0@[0-2]]",
            "[hlt]",
            "β",
        ];
        let host = pv_features::host::HostPv {
            features: KvmFeatures::all(),
            allowed_exits: DisableExits::all(),
            halt_poll: true,
            enforce_pv_cpuid: true,
            binary_stats: true,
            hyperv: true,
            hyperv_cpuid: Some(pv_features::hyperv::HvCpuidSource::System),
            hyperv_synic: Some(pv_features::hyperv::SynicCap::Synic2),
            exit_hypercall_mask: u64::MAX,
            msr_filter: true,
        };
        let mut parsed = 0;
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let input = format!("{a}{b}{c}");
                    let Ok(config) = CpusConfig::parse(&input) else {
                        continue;
                    };
                    parsed += 1;
                    let _ = config.validate(&host, 4, KvmFeatures::VMM_PROVIDED);
                    let printed = config.to_option_string().expect("parsed configs print");
                    assert_eq!(CpusConfig::parse(&printed).as_ref(), Ok(&config), "{input}");
                }
            }
        }
        assert!(parsed > 100, "{parsed}");
    }

    #[test]
    fn compress_round_trips() {
        for list in [
            vec![0],
            vec![0, 1],
            vec![0, 1, 2],
            vec![3, 2, 1],
            vec![0, 1, 2, 4, 5, 6, 7, 9],
            vec![usize::MAX - 2, usize::MAX - 1, usize::MAX],
            vec![5, 5, 5],
        ] {
            let text = compress(&list);
            let back = crate::option_parser::parse_integer_list(&text, MAX_INTEGER_LIST_LEN)
                .expect("parses");
            assert_eq!(back, list, "{text}");
        }
        assert_eq!(compress(&[0, 1, 2, 4, 5, 6, 7, 9]), "0-2,4-7,9");
    }
}
