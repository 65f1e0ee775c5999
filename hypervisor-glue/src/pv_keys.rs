//! The KVM PV keys of `--cpus` for any option parser: the seam a VMM that keeps its own
//! parser and `CpusConfig` (Cloud Hypervisor) embeds, and the one [`crate::cpus::CpusConfig`]
//! uses too, so that both read and write the keys alike and refuse the same values with the
//! same words.
//!
//! The VMM registers [`KEYS`] with its parser, parses its option string as it always does,
//! and hands [`read()`] a function that returns a key's value (without quotes; `None` when the
//! key is absent or empty, as Cloud Hypervisor's `OptionParser::get` does). [`write()`] gives
//! the keys back in the same syntax, only those that differ from the defaults. The result is
//! a [`PvConfig`], which the VMM's `CpusConfig` holds as `kvm_pv` (serde: absent = default).
//!
//! ```
//! use hypervisor_glue::pv_keys;
//! use std::collections::HashMap;
//!
//! // What a parser holds after `--cpus boot=2,dedicated=on,halt_poll_ns=0`.
//! let values = HashMap::from([("dedicated", "on"), ("halt_poll_ns", "0")]);
//! let pv = pv_keys::read("--cpus", |key| values.get(key).map(|v| v.to_string()))?;
//! assert!(pv.dedicated);
//! assert_eq!(pv_keys::write(&pv), ["dedicated=on", "halt_poll_ns=0"]);
//!
//! let bad = HashMap::from([("halt_poll_ns", "soon")]);
//! let err = pv_keys::read("--cpus", |key| bad.get(key).map(|v| v.to_string())).unwrap_err();
//! assert!(err.to_string().starts_with("--cpus halt_poll_ns=soon: expected nanoseconds"));
//! # Ok::<(), hypervisor_glue::option_parser::OptionError>(())
//! ```

use std::fmt::Display;

use pv_features::config::{FeatureSelection, PvConfig};
use pv_features::exits::DisableExits;

use crate::help;
use crate::option_parser::{parse_toggle, OptionError};

/// The PV keys, in the order the help lists them.
pub const KEYS: [&str; 5] = [
    "kvm_pv",
    "dedicated",
    "disable_exits",
    "halt_poll_ns",
    "enforce_pv_cpuid",
];

/// Reads the PV keys through `get` (a key's value without quotes, `None` when absent or
/// empty). `option` names the option in errors (`--cpus`). Keys that are absent keep
/// [`PvConfig::default`]'s value. Each error names the key and the value as given.
pub fn read(
    option: &'static str,
    get: impl Fn(&str) -> Option<String>,
) -> Result<PvConfig, OptionError> {
    let field = |key: &'static str| Field {
        option,
        key,
        value: get(key),
    };
    let defaults = PvConfig::default();
    Ok(PvConfig {
        features: field("kvm_pv")
            .parse(parse_feature_selection)?
            .unwrap_or(defaults.features),
        dedicated: field("dedicated")
            .parse(parse_toggle)?
            .unwrap_or(defaults.dedicated),
        disable_exits: field("disable_exits").parse(parse_disable_exits)?,
        halt_poll_ns: field("halt_poll_ns")
            .parse(|v| integer::<u32>(v, "nanoseconds as an unsigned 32-bit integer"))?,
        enforce_pv_cpuid: field("enforce_pv_cpuid")
            .parse(parse_toggle)?
            .unwrap_or(defaults.enforce_pv_cpuid),
    })
}

/// One key's value as the parser gave it.
struct Field {
    option: &'static str,
    key: &'static str,
    value: Option<String>,
}

impl Field {
    /// `None` when absent; an error naming the key and the value when `parse` refuses it.
    fn parse<T>(
        self,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, OptionError> {
        let Some(value) = self.value else {
            return Ok(None);
        };
        parse(&value)
            .map(Some)
            .map_err(|reason| OptionError::InvalidValue {
                option: self.option,
                key: self.key.to_owned(),
                value,
                reason,
            })
    }
}

/// Whether `pv` holds the defaults of every key: a `CpusConfig` leaves its `kvm_pv` out of
/// the JSON then (`#[serde(default, skip_serializing_if = "pv_keys::is_default")]`), so a
/// configuration without PV settings serializes as it did before the PV keys existed.
pub fn is_default(pv: &PvConfig) -> bool {
    *pv == PvConfig::default()
}

/// The PV keys of `pv` that differ from the defaults, as `key=value` items in [`KEYS`]
/// order; [`read`] gives back the same configuration.
pub fn write(pv: &PvConfig) -> Vec<String> {
    let defaults = PvConfig::default();
    let mut items = Vec::new();
    if pv.features != defaults.features {
        items.push(format!("kvm_pv={}", pv.features));
    }
    if pv.dedicated != defaults.dedicated {
        items.push(format!("dedicated={}", on_off(pv.dedicated)));
    }
    if let Some(exits) = pv.disable_exits {
        items.push(format!("disable_exits=[{exits}]"));
    }
    if let Some(ns) = pv.halt_poll_ns {
        items.push(format!("halt_poll_ns={ns}"));
    }
    if pv.enforce_pv_cpuid != defaults.enforce_pv_cpuid {
        items.push(format!("enforce_pv_cpuid={}", on_off(pv.enforce_pv_cpuid)));
    }
    items
}

/// The PV keys' part of the one-line `--cpus` syntax (`kvm_pv=all|off|[...],...`), for a VMM
/// that appends it to its own syntax line.
pub fn syntax() -> String {
    help::CPUS_KEYS
        .iter()
        .filter(|k| k.pv)
        .map(|k| format!("{}={}", k.key, k.values))
        .collect::<Vec<_>>()
        .join(",")
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

fn integer<T>(v: &str, what: &str) -> Result<T, String>
where
    T: std::str::FromStr,
    T::Err: Display,
{
    v.parse::<T>()
        .map_err(|err| format!("expected {what} ({err})"))
}

/// `kvm_pv=all|off|[names]`, through pv-features' names.
fn parse_feature_selection(value: &str) -> Result<FeatureSelection, String> {
    FeatureSelection::parse(value).map_err(|err| format!("{err}; or all, or off"))
}

/// `disable_exits=[names]` (brackets optional), through pv-features' names.
fn parse_disable_exits(value: &str) -> Result<DisableExits, String> {
    let value = value.trim();
    let inner = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    DisableExits::parse_list(inner).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read_from(pairs: &[(&str, &str)]) -> Result<PvConfig, OptionError> {
        let values: HashMap<&str, &str> = pairs.iter().copied().collect();
        read("--cpus", |k| {
            values
                .get(k)
                .filter(|v| !v.is_empty())
                .map(|v| v.to_string())
        })
    }

    #[test]
    fn absent_keys_are_the_defaults() {
        assert_eq!(read_from(&[]).expect("no keys"), PvConfig::default());
        assert!(write(&PvConfig::default()).is_empty());
    }

    #[test]
    fn every_key_reads_and_writes_back() {
        let pv = read_from(&[
            ("kvm_pv", "[steal_time,pv_tlb_flush]"),
            ("dedicated", "on"),
            ("disable_exits", "[hlt,pause]"),
            ("halt_poll_ns", "200000"),
            ("enforce_pv_cpuid", "off"),
        ])
        .expect("valid keys");
        assert!(pv.dedicated && !pv.enforce_pv_cpuid);
        assert_eq!(pv.halt_poll_ns, Some(200_000));
        assert_eq!(
            pv.disable_exits,
            Some(DisableExits::HLT | DisableExits::PAUSE)
        );
        let items = write(&pv);
        let owned: Vec<(String, String)> = items
            .iter()
            .map(|i| {
                let (k, v) = i.split_once('=').expect("key=value");
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let pairs: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(read_from(&pairs).expect("written keys read back"), pv);
        assert_eq!(
            items
                .iter()
                .map(|i| i.split('=').next().unwrap_or_default())
                .collect::<Vec<_>>(),
            KEYS
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_value() {
        for (key, value, words) in [
            (
                "halt_poll_ns",
                "soon",
                "expected nanoseconds as an unsigned 32-bit integer",
            ),
            ("halt_poll_ns", "-1", "expected nanoseconds"),
            ("halt_poll_ns", "4294967296", "expected nanoseconds"),
            ("dedicated", "maybe", ""),
            ("enforce_pv_cpuid", "1", ""),
            ("disable_exits", "[hlt,nap]", "nap"),
            ("kvm_pv", "[steal_time,warp_drive]", "warp_drive"),
        ] {
            let err = read_from(&[(key, value)]).expect_err(value);
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("--cpus {key}={value}: ")) && text.contains(words),
                "{text}"
            );
        }
    }

    #[test]
    fn the_syntax_lists_every_pv_key() {
        let line = syntax();
        for key in KEYS {
            assert!(line.contains(&format!("{key}=")), "{line}");
        }
        assert!(!line.contains("boot="), "{line}");
    }
}
