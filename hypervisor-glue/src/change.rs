//! The rules for changing a VM's PV configuration (`PUT /api/v1/vm.pv` with a partial
//! `kvm_pv` body): given what the VM runs with, what already waits for the next reboot, the
//! requested change and the VM's state, decide what applies now, what becomes pending until
//! the next reboot, and what is rejected, with a reason for each.
//!
//! | VM state | field | outcome | why |
//! |---|---|---|---|
//! | `Created`, `Shutdown` | any | applies to the requested config | no KVM VM exists; the next boot creates it with the new config |
//! | `Running`, `Paused` | `halt_poll_ns` = number | now (`KVM_CAP_HALT_POLL`) | KVM takes a new per-VM halt-poll limit at any time |
//! | `Running`, `Paused` | `halt_poll_ns` = `null` | next reboot | KVM cannot drop a VM's override back to the module default |
//! | `Running`, `Paused` | `features` | next reboot | CPUID is fixed once the vCPUs have run |
//! | `Running`, `Paused` | `dedicated` | next reboot | the realtime hint is in CPUID and the preset disables exits |
//! | `Running`, `Paused` | `disable_exits` | next reboot | KVM accepts it only before the first vCPU exists |
//! | `Running`, `Paused` | `enforce_pv_cpuid` | next reboot | set per vCPU before its MSRs are restored; a guest keeps what it booted with |
//! | any | value already in force, nothing pending | unchanged | |
//! | `Running`, `Paused` | value in force, another one pending | the pending change is cancelled | |
//! | any | the resulting config does not resolve on the host | whole request rejected | nothing changes |
//! | any | empty patch `{}` | rejected | a request that changes nothing is a client mistake |
//!
//! A paused VM keeps its KVM VM and vCPUs, so it follows the same rules as a running one.
//! Pending changes are merged: a later value for a field replaces an earlier pending one.
//! At reboot (or when the VM is shut down and booted again) [`PvPatch::apply_to`] folds them
//! into the requested config.

use std::fmt;

use pv_features::config::{EffectivePv, FeatureSelection, PvConfig};
use pv_features::cpuid::KvmFeatures;
use pv_features::exits::DisableExits;
use pv_features::host::HostPv;
use serde::{Deserialize, Deserializer, Serialize};

use crate::validate::describe_pv_error;

/// Distinguishes an absent field (`None`: no change) from an explicit `null`
/// (`Some(None)`: back to the default).
fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A field that may be absent (`None`: no change) but, when present, must hold a value: an
/// explicit `null` is refused rather than read as "no change", which a client sending it
/// to reset the field would not expect.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// A partial `kvm_pv`: the fields to change, everything absent stays as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PvPatch {
    /// New feature selection.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub features: Option<FeatureSelection>,
    /// New `dedicated` preset choice.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub dedicated: Option<bool>,
    /// New exits to disable; `Some(None)` (JSON `null`) returns to the preset's choice.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub disable_exits: Option<Option<DisableExits>>,
    /// New halt-poll limit; `Some(None)` (JSON `null`) returns to the kernel's default.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub halt_poll_ns: Option<Option<u32>>,
    /// New enforcement choice.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub enforce_pv_cpuid: Option<bool>,
}

impl PvPatch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `config` with the patch's fields applied.
    pub fn apply_to(&self, config: &PvConfig) -> PvConfig {
        PvConfig {
            features: self.features.unwrap_or(config.features),
            dedicated: self.dedicated.unwrap_or(config.dedicated),
            disable_exits: self.disable_exits.unwrap_or(config.disable_exits),
            halt_poll_ns: self.halt_poll_ns.unwrap_or(config.halt_poll_ns),
            enforce_pv_cpuid: self.enforce_pv_cpuid.unwrap_or(config.enforce_pv_cpuid),
        }
    }

    /// This patch followed by `later`: `later`'s fields win.
    pub fn merge(&self, later: &PvPatch) -> PvPatch {
        PvPatch {
            features: later.features.or(self.features),
            dedicated: later.dedicated.or(self.dedicated),
            disable_exits: later.disable_exits.or(self.disable_exits),
            halt_poll_ns: later.halt_poll_ns.or(self.halt_poll_ns),
            enforce_pv_cpuid: later.enforce_pv_cpuid.or(self.enforce_pv_cpuid),
        }
    }

    /// The patch that turns `from` into `to`: the fields that differ; `None` when equal.
    pub fn diff(from: &PvConfig, to: &PvConfig) -> Option<PvPatch> {
        let patch = PvPatch {
            features: (from.features != to.features).then_some(to.features),
            dedicated: (from.dedicated != to.dedicated).then_some(to.dedicated),
            disable_exits: (from.disable_exits != to.disable_exits).then_some(to.disable_exits),
            halt_poll_ns: (from.halt_poll_ns != to.halt_poll_ns).then_some(to.halt_poll_ns),
            enforce_pv_cpuid: (from.enforce_pv_cpuid != to.enforce_pv_cpuid)
                .then_some(to.enforce_pv_cpuid),
        };
        (!patch.is_empty()).then_some(patch)
    }
}

/// The VM's lifecycle state, as Cloud Hypervisor's `VmState` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    /// Created but never booted: no KVM VM exists yet.
    Created,
    /// Booted and running: the KVM VM and its vCPUs exist.
    Running,
    /// Paused: the KVM VM and its vCPUs still exist.
    Paused,
    /// Shut down: the KVM VM is gone; booting again creates a new one from the config.
    Shutdown,
}

impl VmState {
    /// Whether a KVM VM with vCPUs exists, which fixes CPUID and exits until it is
    /// recreated.
    pub fn has_vcpus(self) -> bool {
        matches!(self, VmState::Running | VmState::Paused)
    }
}

/// Something the VMM does to the live KVM VM right away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum ImmediateAction {
    /// `KVM_ENABLE_CAP(KVM_CAP_HALT_POLL, ns)` on the VM.
    SetHaltPollNs {
        /// The new limit.
        ns: u32,
    },
}

/// When a field's change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Timing {
    /// Now: in the requested config (and, for a live VM, through an [`ImmediateAction`]).
    Now,
    /// At the next reboot, which recreates the KVM VM.
    NextReboot,
    /// The value is already in force and nothing else was pending: nothing to do.
    Unchanged,
    /// The value is already in force: the different pending value is dropped.
    PendingCancelled,
}

/// What happens to one field of the patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// The field (`features`, `dedicated`, `disable_exits`, `halt_poll_ns`,
    /// `enforce_pv_cpuid`).
    pub field: String,
    /// The requested value as JSON.
    pub value: String,
    /// When it takes effect.
    pub timing: Timing,
    /// Why, in words.
    pub reason: String,
}

/// The outcome of an accepted change; the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePlan {
    /// What the VMM does to the live KVM VM now, in order (empty without one).
    pub applied_now: Vec<ImmediateAction>,
    /// What waits for the next reboot, merged with what waited before; `None` (left out of
    /// the JSON) for nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PvPatch>,
    /// The requested config from now on (what the VM runs with, or will boot with).
    pub new_requested: PvConfig,
    /// The requested config after the next reboot: `new_requested` with `pending` applied.
    pub after_reboot: PvConfig,
    /// What happens to each field of the patch.
    pub changes: Vec<FieldChange>,
    /// The same, one line per field (`field=value: outcome, because ...`).
    pub reasons: Vec<String>,
}

/// A change that is not accepted; nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The patch has no field.
    #[error("kvm_pv change: the request changes nothing; give at least one of features, dedicated, disable_exits, halt_poll_ns, enforce_pv_cpuid")]
    EmptyPatch,
    /// The config the patch leads to cannot be applied on this host.
    #[error("kvm_pv change rejected: {field}={value}: {reason}")]
    Invalid {
        /// The JSON field.
        field: &'static str,
        /// The value as the config would hold it.
        value: String,
        /// Why it cannot be applied.
        reason: String,
        /// pv-features' error.
        error: pv_features::config::ConfigError,
    },
}

struct Field {
    name: &'static str,
    value: String,
    in_force: bool,
    pending_differs: bool,
}

/// Plans `patch` for a VM in `state` that runs with (or will boot with) `requested` and has
/// `pending` changes waiting for its next reboot. The resulting configs (now and after the
/// next reboot) must resolve against `host` with `vmm_backs`, or the whole patch is rejected.
/// See the module documentation for the rules.
pub fn plan_change(
    requested: &PvConfig,
    pending: Option<&PvPatch>,
    patch: &PvPatch,
    state: VmState,
    host: &HostPv,
    vmm_backs: KvmFeatures,
) -> Result<ChangePlan, ChangeError> {
    if patch.is_empty() {
        return Err(ChangeError::EmptyPatch);
    }
    let pending = pending.copied().unwrap_or_default();
    let fields = fields_of(patch, requested, &pending);

    let (new_requested, new_pending, applied_now) = if state.has_vcpus() {
        // Only a new halt-poll number reaches the live VM; everything else waits.
        let now = PvPatch {
            halt_poll_ns: patch.halt_poll_ns.filter(Option::is_some),
            ..PvPatch::default()
        };
        let new_requested = now.apply_to(requested);
        let later = PvPatch {
            halt_poll_ns: patch.halt_poll_ns.filter(Option::is_none),
            ..*patch
        };
        let mut merged = pending.merge(&later);
        if now.halt_poll_ns.is_some() {
            merged.halt_poll_ns = None;
        }
        let after_reboot = merged.apply_to(&new_requested);
        let applied_now = match now.halt_poll_ns {
            Some(Some(ns)) if new_requested.halt_poll_ns != requested.halt_poll_ns => {
                vec![ImmediateAction::SetHaltPollNs { ns }]
            }
            _ => Vec::new(),
        };
        (
            new_requested,
            PvPatch::diff(&new_requested, &after_reboot),
            applied_now,
        )
    } else {
        // No KVM VM: everything, including what was pending, goes into the config.
        (pending.merge(patch).apply_to(requested), None, Vec::new())
    };
    let after_reboot = new_pending.map_or(new_requested, |p| p.apply_to(&new_requested));

    for config in [&new_requested, &after_reboot] {
        if let Err(error) = config.resolve(host, vmm_backs) {
            let parts = describe_pv_error(config, &error);
            return Err(ChangeError::Invalid {
                field: parts.field,
                value: parts.value,
                reason: parts.reason,
                error,
            });
        }
    }

    let changes: Vec<FieldChange> = fields
        .into_iter()
        .map(|field| explain(field, state))
        .collect();
    let reasons = changes
        .iter()
        .map(|c| format!("{}={}: {}", c.field, c.value, c.reason))
        .collect();
    for line in &reasons {
        log::info!("kvm_pv change: {line}");
    }
    Ok(ChangePlan {
        applied_now,
        pending: new_pending,
        new_requested,
        after_reboot,
        changes,
        reasons,
    })
}

/// A PV change as a client's command-line flags give it (`pv-remote pv`, `ch-remote
/// kvm-pv`): each flag's text as typed, `None` when not given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PvFlags<'a> {
    /// `--halt-poll-ns NS|default`.
    pub halt_poll_ns: Option<&'a str>,
    /// `--dedicated on|off`.
    pub dedicated: Option<bool>,
    /// `--kvm-pv all|off|LIST`.
    pub kvm_pv: Option<&'a str>,
    /// `--disable-exits LIST|default` (`""` for none).
    pub disable_exits: Option<&'a str>,
    /// `--enforce-pv-cpuid on|off`.
    pub enforce_pv_cpuid: Option<bool>,
}

/// A flag of [`PvFlags`] that does not parse, or no flag at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PvFlagsError {
    /// The flag's value is not one it takes.
    #[error("--{flag} {value}: {reason}")]
    Invalid {
        /// The flag, without its dashes.
        flag: &'static str,
        /// The value as given.
        value: String,
        /// What it takes.
        reason: String,
    },
    /// No flag was given: a request that changes nothing is refused by the VMM anyway.
    #[error("give at least one of --halt-poll-ns, --dedicated, --kvm-pv, --disable-exits, --enforce-pv-cpuid")]
    Empty,
}

impl PvPatch {
    /// The change the flags ask for; `default` (for `--halt-poll-ns` and
    /// `--disable-exits`) asks for the explicit `null` that restores the default.
    pub fn from_flags(flags: PvFlags<'_>) -> Result<PvPatch, PvFlagsError> {
        let invalid = |flag, value: &str, reason: String| PvFlagsError::Invalid {
            flag,
            value: value.to_owned(),
            reason,
        };
        let halt_poll_ns = flags
            .halt_poll_ns
            .map(|v| match v.trim() {
                "default" => Ok(None),
                n => n.parse::<u32>().map(Some).map_err(|_| {
                    invalid(
                        "halt-poll-ns",
                        v,
                        "expected nanoseconds (0 to 4294967295) or `default`".to_owned(),
                    )
                }),
            })
            .transpose()?;
        let features = flags
            .kvm_pv
            .map(|v| FeatureSelection::parse(v).map_err(|e| invalid("kvm-pv", v, e.to_string())))
            .transpose()?;
        let disable_exits = flags
            .disable_exits
            .map(|v| match v.trim() {
                "default" => Ok(None),
                list => {
                    let inner = list
                        .strip_prefix('[')
                        .and_then(|l| l.strip_suffix(']'))
                        .unwrap_or(list);
                    DisableExits::parse_list(inner)
                        .map(Some)
                        .map_err(|e| invalid("disable-exits", v, e.to_string()))
                }
            })
            .transpose()?;
        let patch = PvPatch {
            features,
            dedicated: flags.dedicated,
            disable_exits,
            halt_poll_ns,
            enforce_pv_cpuid: flags.enforce_pv_cpuid,
        };
        if patch.is_empty() {
            return Err(PvFlagsError::Empty);
        }
        Ok(patch)
    }
}

/// The config a VM is recreated with at reboot: `requested` with the pending changes.
pub fn at_reboot(requested: &PvConfig, pending: Option<&PvPatch>) -> PvConfig {
    pending.map_or(*requested, |p| p.apply_to(requested))
}

/// A VM's PV state as `vm.info` reports it (the `pv` object of pv-vmm's answer, `kvm_pv` of
/// the patched Cloud Hypervisor's): what was asked for, what the VM runs with (with the
/// features that were dropped and why), what waits for the next reboot, and what it will
/// then run with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PvInfo {
    /// The `kvm_pv` settings of the VM config.
    pub requested: PvConfig,
    /// What the VM runs with, or without a KVM VM what it would boot with on this host;
    /// `None` (left out of the JSON) when that does not resolve here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<EffectivePv>,
    /// Whether `effective` is the state of a KVM VM that exists.
    pub effective_is_live: bool,
    /// Changes accepted while the VM runs that wait for its next reboot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PvPatch>,
    /// The settings the next boot or reboot uses: `requested` with `pending`.
    pub after_reboot: PvConfig,
    /// What `after_reboot` resolves to on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_reboot_effective: Option<EffectivePv>,
}

impl PvInfo {
    /// The state of a VM with `requested` settings, `live` its KVM VM's effective state if
    /// one exists, and `pending` changes; resolved against `host` (`vmm_backs`: the
    /// [`KvmFeatures::VMM_PROVIDED`] features the VMM implements).
    pub fn new(
        requested: PvConfig,
        live: Option<&EffectivePv>,
        pending: Option<PvPatch>,
        host: &HostPv,
        vmm_backs: KvmFeatures,
    ) -> Self {
        let after_reboot = at_reboot(&requested, pending.as_ref());
        let effective = match live {
            Some(live) => Some(live.clone()),
            None => requested.resolve(host, vmm_backs).ok(),
        };
        PvInfo {
            requested,
            effective,
            effective_is_live: live.is_some(),
            pending,
            after_reboot,
            after_reboot_effective: after_reboot.resolve(host, vmm_backs).ok(),
        }
    }
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "?".to_owned())
}

fn fields_of(patch: &PvPatch, requested: &PvConfig, pending: &PvPatch) -> Vec<Field> {
    let mut fields = Vec::new();
    let mut push = |name, value: String, in_force: bool, pending_differs: bool| {
        fields.push(Field {
            name,
            value,
            in_force,
            pending_differs,
        })
    };
    if let Some(v) = patch.features {
        push(
            "features",
            json(&v),
            v == requested.features,
            pending.features.is_some_and(|p| p != v),
        );
    }
    if let Some(v) = patch.dedicated {
        push(
            "dedicated",
            json(&v),
            v == requested.dedicated,
            pending.dedicated.is_some_and(|p| p != v),
        );
    }
    if let Some(v) = patch.disable_exits {
        push(
            "disable_exits",
            json(&v),
            v == requested.disable_exits,
            pending.disable_exits.is_some_and(|p| p != v),
        );
    }
    if let Some(v) = patch.halt_poll_ns {
        push(
            "halt_poll_ns",
            json(&v),
            v == requested.halt_poll_ns,
            pending.halt_poll_ns.is_some_and(|p| p != v),
        );
    }
    if let Some(v) = patch.enforce_pv_cpuid {
        push(
            "enforce_pv_cpuid",
            json(&v),
            v == requested.enforce_pv_cpuid,
            pending.enforce_pv_cpuid.is_some_and(|p| p != v),
        );
    }
    fields
}

fn explain(field: Field, state: VmState) -> FieldChange {
    let (timing, reason) = if field.in_force && !field.pending_differs {
        (Timing::Unchanged, "already in force".to_owned())
    } else if !state.has_vcpus() {
        (
            Timing::Now,
            format!(
                "applies: the VM is {}, so no KVM VM exists and the next boot creates it with this value",
                state_word(state)
            ),
        )
    } else if field.in_force {
        (
            Timing::PendingCancelled,
            "already in force; the different value pending for the next reboot is dropped"
                .to_owned(),
        )
    } else {
        match field.name {
            "halt_poll_ns" if field.value != "null" => (
                Timing::Now,
                "applies now: KVM takes a new per-VM halt-poll limit while vCPUs run".to_owned(),
            ),
            "halt_poll_ns" => (
                Timing::NextReboot,
                "pending until the next reboot: KVM cannot return a running VM to the kernel's default".to_owned(),
            ),
            "features" => (
                Timing::NextReboot,
                "pending until the next reboot: the guest's CPUID is fixed once its vCPUs have run".to_owned(),
            ),
            "dedicated" => (
                Timing::NextReboot,
                "pending until the next reboot: the realtime hint is in CPUID and the preset's exits can only be disabled before the first vCPU exists".to_owned(),
            ),
            "disable_exits" => (
                Timing::NextReboot,
                "pending until the next reboot: KVM disables exits only before the first vCPU exists".to_owned(),
            ),
            _ => (
                Timing::NextReboot,
                "pending until the next reboot: enforcement is set per vCPU before its MSRs are restored, and a guest keeps what it booted with".to_owned(),
            ),
        }
    };
    FieldChange {
        field: field.name.to_owned(),
        value: field.value,
        timing,
        reason,
    }
}

fn state_word(state: VmState) -> &'static str {
    match state {
        VmState::Created => "not booted yet",
        VmState::Shutdown => "shut down",
        VmState::Running => "running",
        VmState::Paused => "paused",
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(state_word(*self))
    }
}

#[cfg(test)]
mod tests {
    use pv_features::config::ConfigError;

    use super::*;

    fn host() -> HostPv {
        HostPv {
            features: KvmFeatures::from_bits_truncate(0x0100_7efb),
            allowed_exits: DisableExits::HLT | DisableExits::PAUSE | DisableExits::CSTATE,
            halt_poll: true,
            enforce_pv_cpuid: true,
            binary_stats: true,
            hyperv: true,
            hyperv_cpuid: Some(pv_features::hyperv::HvCpuidSource::System),
            hyperv_synic: Some(pv_features::hyperv::SynicCap::Synic2),
            exit_hypercall_mask: 0,
            msr_filter: true,
        }
    }

    fn patch(json: &str) -> PvPatch {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    fn plan(
        requested: &PvConfig,
        pending: Option<&str>,
        body: &str,
        state: VmState,
    ) -> Result<ChangePlan, ChangeError> {
        let pending = pending.map(patch);
        plan_change(
            requested,
            pending.as_ref(),
            &patch(body),
            state,
            &host(),
            KvmFeatures::empty(),
        )
    }

    fn halt(ns: u32) -> PvConfig {
        PvConfig {
            halt_poll_ns: Some(ns),
            ..PvConfig::shared()
        }
    }

    /// One row per rule: (requested, pending before, patch, state) -> (timing of each field,
    /// immediate actions, pending after as JSON, requested after).
    #[test]
    fn rules_table() {
        struct Row {
            name: &'static str,
            requested: PvConfig,
            pending: Option<&'static str>,
            patch: &'static str,
            states: &'static [VmState],
            timings: &'static [Timing],
            now: &'static [ImmediateAction],
            pending_after: Option<&'static str>,
            requested_after: PvConfig,
        }
        use Timing::*;
        use VmState::*;
        let shared = PvConfig::shared();
        let rows = [
            Row {
                name: "before boot everything applies",
                requested: shared,
                pending: None,
                patch: r#"{"features":["steal_time"],"dedicated":true,"disable_exits":["hlt"],"halt_poll_ns":1000,"enforce_pv_cpuid":false}"#,
                states: &[Created, Shutdown],
                timings: &[Now, Now, Now, Now, Now],
                now: &[],
                pending_after: None,
                requested_after: PvConfig {
                    features: FeatureSelection::List(KvmFeatures::STEAL_TIME),
                    dedicated: true,
                    disable_exits: Some(DisableExits::HLT),
                    halt_poll_ns: Some(1000),
                    enforce_pv_cpuid: false,
                },
            },
            Row {
                name: "before boot, pending changes fold into the config",
                requested: shared,
                pending: Some(r#"{"dedicated":true}"#),
                patch: r#"{"halt_poll_ns":5}"#,
                states: &[Created, Shutdown],
                timings: &[Now],
                now: &[],
                pending_after: None,
                requested_after: PvConfig {
                    halt_poll_ns: Some(5),
                    ..PvConfig::dedicated()
                },
            },
            Row {
                name: "halt_poll_ns applies now",
                requested: shared,
                pending: None,
                patch: r#"{"halt_poll_ns":200000}"#,
                states: &[Running, Paused],
                timings: &[Now],
                now: &[ImmediateAction::SetHaltPollNs { ns: 200_000 }],
                pending_after: None,
                requested_after: halt(200_000),
            },
            Row {
                name: "halt_poll_ns 0 turns polling off now",
                requested: halt(200_000),
                pending: None,
                patch: r#"{"halt_poll_ns":0}"#,
                states: &[Running, Paused],
                timings: &[Now],
                now: &[ImmediateAction::SetHaltPollNs { ns: 0 }],
                pending_after: None,
                requested_after: halt(0),
            },
            Row {
                name: "halt_poll_ns null waits for the reboot",
                requested: halt(200_000),
                pending: None,
                patch: r#"{"halt_poll_ns":null}"#,
                states: &[Running, Paused],
                timings: &[NextReboot],
                now: &[],
                pending_after: Some(r#"{"halt_poll_ns":null}"#),
                requested_after: halt(200_000),
            },
            Row {
                name: "a halt_poll_ns number supersedes a pending null",
                requested: halt(200_000),
                pending: Some(r#"{"halt_poll_ns":null}"#),
                patch: r#"{"halt_poll_ns":100}"#,
                states: &[Running, Paused],
                timings: &[Now],
                now: &[ImmediateAction::SetHaltPollNs { ns: 100 }],
                pending_after: None,
                requested_after: halt(100),
            },
            Row {
                name: "features wait for the reboot",
                requested: shared,
                pending: None,
                patch: r#"{"features":["steal_time","pv_send_ipi"]}"#,
                states: &[Running, Paused],
                timings: &[NextReboot],
                now: &[],
                pending_after: Some(r#"{"features":["steal_time","pv_send_ipi"]}"#),
                requested_after: shared,
            },
            Row {
                name: "dedicated waits for the reboot",
                requested: shared,
                pending: None,
                patch: r#"{"dedicated":true}"#,
                states: &[Running, Paused],
                timings: &[NextReboot],
                now: &[],
                pending_after: Some(r#"{"dedicated":true}"#),
                requested_after: shared,
            },
            Row {
                name: "disable_exits waits for the reboot",
                requested: shared,
                pending: None,
                patch: r#"{"disable_exits":["hlt","pause"]}"#,
                states: &[Running, Paused],
                timings: &[NextReboot],
                now: &[],
                pending_after: Some(r#"{"disable_exits":["hlt","pause"]}"#),
                requested_after: shared,
            },
            Row {
                name: "disable_exits null (back to the preset) waits for the reboot",
                requested: PvConfig {
                    disable_exits: Some(DisableExits::PAUSE),
                    ..shared
                },
                pending: None,
                patch: r#"{"disable_exits":null}"#,
                states: &[Running, Paused],
                timings: &[NextReboot],
                now: &[],
                pending_after: Some(r#"{"disable_exits":null}"#),
                requested_after: PvConfig {
                    disable_exits: Some(DisableExits::PAUSE),
                    ..shared
                },
            },
            Row {
                name: "enforce_pv_cpuid waits for the reboot",
                requested: shared,
                pending: None,
                patch: r#"{"enforce_pv_cpuid":false}"#,
                states: &[Running, Paused],
                timings: &[NextReboot],
                now: &[],
                pending_after: Some(r#"{"enforce_pv_cpuid":false}"#),
                requested_after: shared,
            },
            Row {
                name: "mixed: halt polling now, the rest later",
                requested: shared,
                pending: None,
                patch: r#"{"dedicated":true,"halt_poll_ns":0}"#,
                states: &[Running, Paused],
                timings: &[NextReboot, Now],
                now: &[ImmediateAction::SetHaltPollNs { ns: 0 }],
                pending_after: Some(r#"{"dedicated":true}"#),
                requested_after: halt(0),
            },
            Row {
                name: "pending changes merge, the later value winning",
                requested: shared,
                pending: Some(r#"{"dedicated":true,"features":"off"}"#),
                patch: r#"{"features":["steal_time"],"enforce_pv_cpuid":false}"#,
                states: &[Running, Paused],
                timings: &[NextReboot, NextReboot],
                now: &[],
                pending_after: Some(
                    r#"{"features":["steal_time"],"dedicated":true,"enforce_pv_cpuid":false}"#,
                ),
                requested_after: shared,
            },
            Row {
                name: "a value in force with nothing pending is unchanged",
                requested: halt(7),
                pending: None,
                patch: r#"{"dedicated":false,"halt_poll_ns":7}"#,
                states: &[Running, Paused, Created, Shutdown],
                timings: &[Unchanged, Unchanged],
                now: &[],
                pending_after: None,
                requested_after: halt(7),
            },
            Row {
                name: "restating the running value cancels the pending one",
                requested: shared,
                pending: Some(r#"{"dedicated":true,"disable_exits":["hlt"]}"#),
                patch: r#"{"dedicated":false}"#,
                states: &[Running, Paused],
                timings: &[PendingCancelled],
                now: &[],
                pending_after: Some(r#"{"disable_exits":["hlt"]}"#),
                requested_after: shared,
            },
            Row {
                name: "before boot, restating the config drops the pending value",
                requested: shared,
                pending: Some(r#"{"dedicated":true}"#),
                patch: r#"{"dedicated":false}"#,
                states: &[Created, Shutdown],
                timings: &[Now],
                now: &[],
                pending_after: None,
                requested_after: shared,
            },
        ];
        for row in rows {
            for state in row.states {
                let p = plan(&row.requested, row.pending, row.patch, *state)
                    .unwrap_or_else(|e| panic!("{} ({state:?}): {e}", row.name));
                let timings: Vec<Timing> = p.changes.iter().map(|c| c.timing).collect();
                assert_eq!(timings, row.timings, "{} ({state:?})", row.name);
                assert_eq!(p.applied_now, row.now, "{} ({state:?})", row.name);
                assert_eq!(
                    p.pending.map(|p| serde_json::to_string(&p).expect("json")),
                    row.pending_after.map(str::to_owned),
                    "{} ({state:?})",
                    row.name
                );
                assert_eq!(
                    p.new_requested, row.requested_after,
                    "{} ({state:?})",
                    row.name
                );
                assert_eq!(
                    p.after_reboot,
                    at_reboot(&p.new_requested, p.pending.as_ref()),
                    "{} ({state:?})",
                    row.name
                );
                assert_eq!(p.reasons.len(), p.changes.len());
            }
        }
    }

    #[test]
    fn reasons_say_why() {
        let p = plan(
            &PvConfig::shared(),
            None,
            r#"{"features":"off","halt_poll_ns":1}"#,
            VmState::Running,
        )
        .expect("accepted");
        assert_eq!(
            p.reasons,
            [
                "features=\"off\": pending until the next reboot: the guest's CPUID is fixed once its vCPUs have run",
                "halt_poll_ns=1: applies now: KVM takes a new per-VM halt-poll limit while vCPUs run",
            ]
        );
        let p = plan(
            &PvConfig::shared(),
            None,
            r#"{"dedicated":true}"#,
            VmState::Created,
        )
        .expect("accepted");
        assert_eq!(
            p.reasons,
            ["dedicated=true: applies: the VM is not booted yet, so no KVM VM exists and the next boot creates it with this value"]
        );
    }

    /// One case per rejection message; a rejected patch changes nothing.
    #[test]
    fn rejections_name_field_value_and_reason() {
        assert_eq!(
            plan(&PvConfig::shared(), None, "{}", VmState::Running)
                .expect_err("empty")
                .to_string(),
            "kvm_pv change: the request changes nothing; give at least one of features, dedicated, disable_exits, halt_poll_ns, enforce_pv_cpuid"
        );
        for (requested, pending, body, message) in [
            (
                PvConfig::shared(),
                None,
                r#"{"features":["pv_tlb_flush"]}"#,
                "kvm_pv change rejected: features=[pv_tlb_flush]: pv_tlb_flush needs steal_time: the flush request travels in the steal-time record",
            ),
            (
                PvConfig::shared(),
                None,
                r#"{"disable_exits":["mwait"],"halt_poll_ns":10}"#,
                "kvm_pv change rejected: disable_exits=[mwait]: the host cannot disable [mwait] (it allows [hlt,pause,cstate])",
            ),
            (
                PvConfig {
                    features: FeatureSelection::List(KvmFeatures::STEAL_TIME | KvmFeatures::PV_UNHALT),
                    ..PvConfig::shared()
                },
                Some(r#"{"dedicated":true}"#),
                r#"{"disable_exits":["hlt"]}"#,
                "kvm_pv change rejected: features=[steal_time,pv_unhalt]: pv_unhalt is not advertised when HLT exits are disabled: a halted vCPU stays in guest mode (disable_exits=[hlt])",
            ),
        ] {
            for state in [VmState::Created, VmState::Running, VmState::Paused, VmState::Shutdown] {
                let err = plan(&requested, pending, body, state).expect_err(body);
                assert_eq!(err.to_string(), message, "{body} ({state:?})");
            }
        }
        let mut h = host();
        h.halt_poll = false;
        let err = plan_change(
            &PvConfig::shared(),
            None,
            &patch(r#"{"halt_poll_ns":100}"#),
            VmState::Running,
            &h,
            KvmFeatures::empty(),
        )
        .expect_err("no halt polling");
        assert_eq!(
            err.to_string(),
            "kvm_pv change rejected: halt_poll_ns=100: the host's KVM lacks per-VM halt polling (KVM_CAP_HALT_POLL)"
        );
        assert!(matches!(
            err,
            ChangeError::Invalid {
                error: ConfigError::HaltPollUnsupported,
                ..
            }
        ));
    }

    #[test]
    fn patch_json_is_strict_and_tri_state() {
        assert_eq!(patch("{}"), PvPatch::default());
        assert!(patch("{}").is_empty());
        let p = patch(r#"{"disable_exits":null,"halt_poll_ns":null}"#);
        assert_eq!(p.disable_exits, Some(None));
        assert_eq!(p.halt_poll_ns, Some(None));
        assert_eq!(
            serde_json::to_string(&p).expect("json"),
            r#"{"disable_exits":null,"halt_poll_ns":null}"#
        );
        let p = patch(r#"{"disable_exits":[],"halt_poll_ns":3}"#);
        assert_eq!(p.disable_exits, Some(Some(DisableExits::empty())));
        assert_eq!(p.halt_poll_ns, Some(Some(3)));
        for (bad, needle) in [
            (r#"{"dedicatd":true}"#, "unknown field `dedicatd`"),
            (r#"{"features":["warp"]}"#, "unknown feature `warp`"),
            (r#"{"disable_exits":["nap"]}"#, "unknown exit `nap`"),
            (r#"{"halt_poll_ns":-1}"#, "invalid value"),
            (r#"{"dedicated":"on"}"#, "invalid type"),
            // Found by schemathesis: null was read as "no change" for the fields that have
            // no default to return to; it is refused like any other wrong type.
            (r#"{"enforce_pv_cpuid":null}"#, "invalid type: null"),
            (
                r#"{"dedicated":null,"halt_poll_ns":0}"#,
                "invalid type: null",
            ),
            (r#"{"features":null}"#, "invalid type: null"),
        ] {
            let err = serde_json::from_str::<PvPatch>(bad).expect_err(bad);
            assert!(err.to_string().contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn plans_serialize_for_the_api() {
        let p = plan(
            &PvConfig::shared(),
            None,
            r#"{"dedicated":true,"halt_poll_ns":0}"#,
            VmState::Running,
        )
        .expect("accepted");
        let text = serde_json::to_string(&p).expect("json");
        assert!(
            text.starts_with(
                r#"{"applied_now":[{"action":"set_halt_poll_ns","ns":0}],"pending":{"dedicated":true},"#
            ),
            "{text}"
        );
        let back: ChangePlan = serde_json::from_str(&text).expect("round trip");
        assert_eq!(back, p);
        assert_eq!(
            serde_json::to_string(&VmState::Paused).expect("json"),
            "\"Paused\""
        );
    }

    #[test]
    fn patch_algebra() {
        let a = patch(r#"{"dedicated":true,"halt_poll_ns":5}"#);
        let b = patch(r#"{"halt_poll_ns":null,"features":"off"}"#);
        let m = a.merge(&b);
        assert_eq!(m.dedicated, Some(true));
        assert_eq!(m.halt_poll_ns, Some(None));
        assert_eq!(m.features, Some(FeatureSelection::Off));
        let base = halt(9);
        let after = m.apply_to(&base);
        assert_eq!(after.halt_poll_ns, None);
        assert!(after.dedicated);
        assert_eq!(
            PvPatch::diff(&base, &after).map(|d| d.apply_to(&base)),
            Some(after)
        );
        assert_eq!(PvPatch::diff(&base, &base), None);
        assert_eq!(at_reboot(&base, None), base);
        assert_eq!(at_reboot(&base, Some(&m)), after);
        assert!(!VmState::Created.has_vcpus() && !VmState::Shutdown.has_vcpus());
        assert!(VmState::Running.has_vcpus() && VmState::Paused.has_vcpus());
    }
}
