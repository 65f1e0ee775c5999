//! The library behind `pv-vmm`: a reference VMM on rust-vmm crates that boots a Linux guest
//! with KVM's paravirtual scalability features, configured the way a Cloud Hypervisor build
//! would configure them (through `hypervisor-glue`). The binary (`src/main.rs`) is the
//! command line around it; the library exists so that fuzz targets and tests can reach the
//! parsers and decoders the binary runs on untrusted input.

#![deny(missing_docs)]

pub mod acpi;
pub mod api;
pub mod boot;
pub mod config;
pub mod control;
pub mod devices;
pub mod error;
pub mod exit_counters;
pub mod layout;
pub mod ram;
pub mod seccomp;
pub mod sink;
pub mod terminal;
pub mod topology;
pub mod vcpu;
pub mod vm;
