//! KVM's paravirtual scalability features for rust-vmm based VMMs.
//!
//! This crate knows the KVM PV ABI and the policy around it, and nothing about any VMM:
//!
//! - [`cpuid`]: feature and hint bits, the KVM leaves, negotiation and merging;
//! - [`exits`]: disabling MWAIT/HLT/PAUSE/C-state exits and per-VM halt polling;
//! - [`mwait`]: MONITOR/MWAIT in the guest's CPUID, shown exactly when MWAIT exits are off;
//! - [`steal_time`]: the steal-time record and its preempted byte;
//! - [`msrs`]: the PV MSRs and their save/restore order;
//! - [`hypercall`]: SEND_IPI decoding and the hypercall dispatcher;
//! - [`stats`]: KVM binary statistics by name;
//! - [`config`]: the `PvConfig` presets and their validation;
//! - [`host`]: what the host's KVM can back;
//! - [`hyperv`]: KVM's Hyper-V leaves beside the KVM ones, and SynIC;
//! - [`setup`]: the one entry point that applies a configuration in KVM's order.

#![deny(missing_docs)]

pub mod config;
pub mod cpuid;
pub mod exits;
pub mod host;
pub mod hypercall;
pub mod hyperv;
pub mod ioctls;
pub mod msrs;
pub mod mwait;
pub mod names;
pub mod setup;
pub mod stats;
pub mod steal_time;
