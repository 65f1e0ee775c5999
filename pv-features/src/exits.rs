//! Disabling MWAIT/HLT/PAUSE/C-state exits (`KVM_CAP_X86_DISABLE_EXITS`) and per-VM halt
//! polling (`KVM_CAP_HALT_POLL`).
//!
//! Source: the kernel's `Documentation/virt/kvm/api.rst`, sections 7.14 and 7.23.
//! kvm-ioctls' `Cap` enum lacks both capabilities, so they go through the raw calls.

use bitflags::bitflags;
use kvm_bindings::{
    kvm_enable_cap, KVM_CAP_HALT_POLL, KVM_CAP_X86_DISABLE_EXITS, KVM_X86_DISABLE_EXITS_CSTATE,
    KVM_X86_DISABLE_EXITS_HLT, KVM_X86_DISABLE_EXITS_MWAIT, KVM_X86_DISABLE_EXITS_PAUSE,
};
use kvm_ioctls::VmFd;

use crate::names::named_flags;

bitflags! {
    /// A set of exits to disable, with KVM's bit values.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct DisableExits: u32 {
        /// MWAIT runs in the guest (`KVM_X86_DISABLE_EXITS_MWAIT`).
        const MWAIT = KVM_X86_DISABLE_EXITS_MWAIT;
        /// HLT runs in the guest (`KVM_X86_DISABLE_EXITS_HLT`).
        const HLT = KVM_X86_DISABLE_EXITS_HLT;
        /// PAUSE does not exit (`KVM_X86_DISABLE_EXITS_PAUSE`).
        const PAUSE = KVM_X86_DISABLE_EXITS_PAUSE;
        /// The guest may enter deep C-states (`KVM_X86_DISABLE_EXITS_CSTATE`).
        const CSTATE = KVM_X86_DISABLE_EXITS_CSTATE;
    }
}

impl DisableExits {
    /// Every exit with its CLI/JSON name, in bit order.
    pub const NAMES: &'static [(DisableExits, &'static str)] = &[
        (Self::MWAIT, "mwait"),
        (Self::HLT, "hlt"),
        (Self::PAUSE, "pause"),
        (Self::CSTATE, "cstate"),
    ];
}

named_flags!(DisableExits, "exit");

/// Errors of the exits and halt-polling calls.
#[derive(Debug, thiserror::Error)]
pub enum ExitsError {
    /// The host's KVM cannot disable some of the requested exits.
    #[error("the host cannot disable exits [{}] (it allows [{}])", refused.names().join(","), allowed.names().join(","))]
    Refused {
        /// The requested exits that the host does not allow.
        refused: DisableExits,
        /// What the host allows.
        allowed: DisableExits,
    },
    /// Exits can only be disabled before the first vCPU is created.
    #[error("exits must be disabled before any vCPU exists ({vcpus} already created)")]
    VcpusExist {
        /// How many vCPUs the VM already has.
        vcpus: usize,
    },
    /// `KVM_ENABLE_CAP(KVM_CAP_X86_DISABLE_EXITS)` failed.
    #[error("KVM_ENABLE_CAP(KVM_CAP_X86_DISABLE_EXITS, [{}])", exits.names().join(","))]
    Enable {
        /// The exits that were being disabled.
        exits: DisableExits,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The host's KVM has no per-VM halt polling.
    #[error("the host's KVM lacks KVM_CAP_HALT_POLL (per-VM halt polling)")]
    HaltPollUnsupported,
    /// `KVM_ENABLE_CAP(KVM_CAP_HALT_POLL)` failed.
    #[error("KVM_ENABLE_CAP(KVM_CAP_HALT_POLL, {ns} ns)")]
    HaltPoll {
        /// The requested maximum halt-poll time.
        ns: u32,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// `KVM_X86_DISABLE_EXITS_APERFMPERF` (Linux 6.17, `include/uapi/linux/kvm.h`): the guest
/// reads APERF/MPERF without exits. Known by name, not offered: the guest would also need
/// CPUID leaf 6's APERFMPERF bit, which this crate does not manage.
pub const KVM_X86_DISABLE_EXITS_APERFMPERF: u32 = 1 << 4;

/// Names the bits of a host's disable-exits mask that [`DisableExits`] does not offer.
pub fn unoffered_exit_bits(mask: u32) -> Vec<String> {
    let rest = mask & !DisableExits::all().bits();
    (0..32)
        .map(|bit| 1u32 << bit)
        .filter(|b| rest & b != 0)
        .map(|b| match b {
            KVM_X86_DISABLE_EXITS_APERFMPERF => {
                "aperfmperf (KVM_X86_DISABLE_EXITS_APERFMPERF: not offered, the guest would also need CPUID leaf 6's APERFMPERF)".to_owned()
            }
            other => format!("{other:#x} (unknown to this VMM)"),
        })
        .collect()
}

/// The exits the host allows to disable: the mask `KVM_CHECK_EXTENSION` reports for
/// `KVM_CAP_X86_DISABLE_EXITS` on the VM (empty where the capability is absent). Bits
/// [`DisableExits`] does not offer are left out, and named in a debug line
/// ([`unoffered_exit_bits`]).
pub fn allowed_disable_exits(vm: &VmFd) -> DisableExits {
    let mask =
        u32::try_from(vm.check_extension_raw(u64::from(KVM_CAP_X86_DISABLE_EXITS))).unwrap_or(0);
    let unoffered = unoffered_exit_bits(mask);
    if !unoffered.is_empty() {
        log::debug!("the host also allows disabling: {}", unoffered.join("; "));
    }
    DisableExits::from_bits_truncate(mask)
}

/// Checks `exits` against the host's `allowed` mask, naming the refused exits.
pub fn check_allowed(exits: DisableExits, allowed: DisableExits) -> Result<(), ExitsError> {
    let refused = exits - allowed;
    if refused.is_empty() {
        Ok(())
    } else {
        Err(ExitsError::Refused { refused, allowed })
    }
}

/// Disables `exits` on `vm`, on top of any exits already disabled (KVM ORs them in).
///
/// KVM accepts this only before the first vCPU is created: kernels since 6.14 refuse it
/// later ("KVM: x86: Disallow KVM_CAP_X86_DISABLE_EXITS after vCPU creation", not in 6.1.y);
/// older ones accept it and leave existing vCPUs inconsistent. So the caller passes how
/// many vCPUs it has created on `vm` and this refuses any call after the first one
/// instead of relying on the kernel. An empty set is a no-op.
pub fn disable_exits(
    vm: &VmFd,
    exits: DisableExits,
    vcpus_created: usize,
) -> Result<(), ExitsError> {
    if vcpus_created > 0 {
        return Err(ExitsError::VcpusExist {
            vcpus: vcpus_created,
        });
    }
    if exits.is_empty() {
        return Ok(());
    }
    check_allowed(exits, allowed_disable_exits(vm))?;
    let cap = kvm_enable_cap {
        cap: KVM_CAP_X86_DISABLE_EXITS,
        args: [u64::from(exits.bits()), 0, 0, 0],
        ..Default::default()
    };
    vm.enable_cap(&cap)
        .map_err(|source| ExitsError::Enable { exits, source })?;
    log::info!("disabled exits [{}]", exits.names().join(","));
    Ok(())
}

/// Whether the host's KVM supports per-VM halt polling.
pub fn halt_poll_supported(vm: &VmFd) -> bool {
    vm.check_extension_raw(u64::from(KVM_CAP_HALT_POLL)) > 0
}

/// Sets the VM's maximum halt-poll time in nanoseconds (0 disables polling). It overrides
/// the `halt_poll_ns` module parameter for this VM and may change at any time.
pub fn set_halt_poll_ns(vm: &VmFd, ns: u32) -> Result<(), ExitsError> {
    if !halt_poll_supported(vm) {
        return Err(ExitsError::HaltPollUnsupported);
    }
    let cap = kvm_enable_cap {
        cap: KVM_CAP_HALT_POLL,
        args: [u64::from(ns), 0, 0, 0],
        ..Default::default()
    };
    vm.enable_cap(&cap)
        .map_err(|source| ExitsError::HaltPoll { ns, source })?;
    log::info!("halt polling set to {ns} ns");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (flag, name) in DisableExits::NAMES {
            assert_eq!(DisableExits::by_name(name).ok(), Some(*flag));
            assert_eq!(flag.names(), vec![*name]);
        }
        let all: DisableExits = "hlt, pause,mwait,cstate".parse().expect("valid list");
        assert_eq!(all, DisableExits::all());
        assert_eq!(all.to_string(), "mwait,hlt,pause,cstate");
        assert_eq!("".parse::<DisableExits>().ok(), Some(DisableExits::empty()));
    }

    #[test]
    fn kvm_bit_values() {
        assert_eq!(DisableExits::MWAIT.bits(), 1);
        assert_eq!(DisableExits::HLT.bits(), 2);
        assert_eq!(DisableExits::PAUSE.bits(), 4);
        assert_eq!(DisableExits::CSTATE.bits(), 8);
    }

    #[test]
    fn unknown_exit_lists_valid_names() {
        let err = "hlt,halt"
            .parse::<DisableExits>()
            .expect_err("halt is not a name");
        assert_eq!(err.name, "halt");
        assert_eq!(
            err.to_string(),
            "unknown exit `halt`; valid: mwait, hlt, pause, cstate"
        );
    }

    #[test]
    fn serde_uses_names_and_rejects_unknown() {
        let set = DisableExits::HLT | DisableExits::PAUSE;
        let json = serde_json::to_string(&set).expect("serializes");
        assert_eq!(json, r#"["hlt","pause"]"#);
        let back: DisableExits = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, set);
        let err =
            serde_json::from_str::<DisableExits>(r#"["hlt","nap"]"#).expect_err("nap is unknown");
        assert!(err.to_string().contains("unknown exit `nap`"), "{err}");
        assert!(serde_json::from_str::<DisableExits>(r#""hlt""#).is_err());
    }

    #[test]
    fn unoffered_host_bits_are_named() {
        assert!(unoffered_exit_bits(0xf).is_empty());
        let named = unoffered_exit_bits(0x1f | 1 << 9);
        assert_eq!(named.len(), 2, "{named:?}");
        assert!(named[0].starts_with("aperfmperf (KVM_X86_DISABLE_EXITS_APERFMPERF"));
        assert_eq!(named[1], "0x200 (unknown to this VMM)");
        assert_eq!(DisableExits::from_bits_truncate(0x1f), DisableExits::all());
    }

    #[test]
    fn check_allowed_names_refused_exits() {
        let allowed = DisableExits::HLT | DisableExits::PAUSE | DisableExits::CSTATE;
        assert!(check_allowed(DisableExits::HLT, allowed).is_ok());
        assert!(check_allowed(DisableExits::empty(), DisableExits::empty()).is_ok());
        let err = check_allowed(DisableExits::all(), allowed).expect_err("mwait refused");
        match &err {
            ExitsError::Refused { refused, .. } => assert_eq!(*refused, DisableExits::MWAIT),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "the host cannot disable exits [mwait] (it allows [hlt,pause,cstate])"
        );
    }
}
