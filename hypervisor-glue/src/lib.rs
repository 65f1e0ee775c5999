//! Cloud Hypervisor shaped integration of the KVM PV features of [`pv_features`].
//!
//! A VMM built like Cloud Hypervisor uses this crate for:
//!
//! - [`cpus`]: the `--cpus` option and the `cpus` JSON schema, Cloud Hypervisor's keys and
//!   fields unchanged, plus the PV keys (`kvm_pv`, `dedicated`, `disable_exits`,
//!   `halt_poll_ns`, `enforce_pv_cpuid`) in [`cpus::CpusConfig::kvm_pv`];
//! - [`pv_keys`]: the PV keys alone, read from any option parser's values (the seam Cloud
//!   Hypervisor's own `CpusConfig::parse` calls) and written back;
//! - [`option_parser`]: Cloud Hypervisor's `key=value,...` syntax with errors that name the
//!   key and the offending text;
//! - [`help`]: the `--cpus` help text, every key with its values and default;
//! - [`validate`]: Cloud Hypervisor's CPU validation and the PV configuration resolved
//!   against the host, with typed errors and warnings;
//! - [`hooks`]: the calls a VMM makes at VM creation, vCPU creation, CPUID setup, hypercall
//!   exits, snapshot/restore and reboot, each naming its place in Cloud Hypervisor;
//! - [`counters`]: each vCPU's steal-time record and the KVM statistics that show the PV
//!   features, in Cloud Hypervisor's `vm.counters` shape;
//! - [`change`]: what a PV change does to a created, running or paused VM: applied now,
//!   pending until the next reboot, or rejected.
//!
//! ```
//! use hypervisor_glue::cpus::CpusConfig;
//!
//! let cpus = CpusConfig::parse("boot=4,dedicated=on,halt_poll_ns=0")?;
//! assert!(cpus.kvm_pv.dedicated);
//! assert_eq!(cpus.to_option_string()?, "boot=4,max=4,dedicated=on,halt_poll_ns=0");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

// The versions this crate's hooks take and return (a VMM that embeds the crate names the
// same types through these).
pub use kvm_bindings;
pub use kvm_ioctls;
pub use pv_features;

pub mod change;
pub mod counters;
pub mod cpus;
pub mod help;
pub mod hooks;
pub mod option_parser;
pub mod pv_keys;
pub mod validate;
