//! The VM configuration as the API takes it (`PUT /api/v1/vm.create`): Cloud Hypervisor's
//! `VmConfig`, of which pv-vmm implements `cpus`, `memory` (size and THP), `payload`
//! (kernel, initramfs, cmdline) and `serial`, and the conversion from the command line into
//! the same type, so both paths boot the same way.
//!
//! Every other field Cloud Hypervisor knows deserializes too ([`CloudHypervisorFields`],
//! [`MemoryConfig`]'s), so that the config Cloud Hypervisor's own `vm.info` returns can be
//! sent here: at Cloud Hypervisor's default, or a device list left empty, a field is
//! accepted (the devices Cloud Hypervisor would add by default and pv-vmm lacks are named
//! in one log line, [`VmConfig::not_provided`]); with any other value [`VmConfig::check`]
//! refuses it with one message naming the field and saying pv-vmm lacks it.

use std::path::PathBuf;

use std::collections::BTreeMap;

use hypervisor_glue::cpus::CpusConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{self, Cli, ConfigError, SerialMode, DEFAULT_MEMORY};

fn default_memory_size() -> u64 {
    DEFAULT_MEMORY
}

/// Guest RAM (`memory` in Cloud Hypervisor's `VmConfig`). Unknown fields are collected in
/// `cloud_hypervisor` (serde cannot deny them beside a flattened map) and refused by
/// [`VmConfig::check_cloud_hypervisor_fields`], Cloud Hypervisor's own at a non-default
/// value, any other as unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryConfig {
    /// Bytes of guest RAM (default 512 MiB).
    #[serde(default = "default_memory_size")]
    pub size: u64,
    /// Back guest RAM with transparent huge pages: on asks the host kernel for them
    /// (`madvise(MADV_HUGEPAGE)`; the default, as in Cloud Hypervisor and QEMU), off asks
    /// against them (`MADV_NOHUGEPAGE`).
    #[serde(default = "default_thp")]
    pub thp: bool,
    /// Cloud Hypervisor's other memory fields, accepted at their defaults only
    /// ([`MEMORY_DEFAULTS`]).
    #[serde(flatten, default, skip_serializing)]
    pub cloud_hypervisor: BTreeMap<String, Value>,
}

fn default_thp() -> bool {
    true
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            size: DEFAULT_MEMORY,
            thp: default_thp(),
            cloud_hypervisor: BTreeMap::new(),
        }
    }
}

/// Cloud Hypervisor's `MemoryConfig` fields that pv-vmm does not implement, with the values
/// that mean "not used" (Cloud Hypervisor's defaults; `null` is always one).
pub const MEMORY_DEFAULTS: &[(&str, &str)] = &[
    ("mergeable", "false"),
    ("hotplug_method", r#""Acpi""#),
    ("hotplug_size", "null"),
    ("hotplugged_size", "null"),
    ("shared", "false"),
    ("hugepages", "false"),
    ("hugepage_size", "null"),
    ("prefault", "false"),
    ("reserve", "false"),
    ("zones", "[]"),
];

fn default_cmdline() -> String {
    "console=ttyS0".to_owned()
}

/// What the VM boots (`payload` in Cloud Hypervisor's `VmConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadConfig {
    /// The guest kernel: a bzImage, or an ELF image with a PVH entry note.
    pub kernel: PathBuf,
    /// The initramfs, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<PathBuf>,
    /// The kernel command line (default `console=ttyS0`).
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
}

/// Where the serial port's output goes, spelled as Cloud Hypervisor's `ConsoleOutputMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SerialOutputMode {
    /// Discarded.
    Off,
    /// The VMM's terminal.
    Tty,
    /// Appended to `file`.
    File,
    /// Discarded.
    Null,
}

/// The serial port (`serial` in Cloud Hypervisor's `VmConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    /// Where the output goes.
    pub mode: SerialOutputMode,
    /// The file for `mode: File`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Cloud Hypervisor's serial socket (`mode: Socket`), which pv-vmm does not implement:
    /// accepted when null only.
    #[serde(default, skip_serializing)]
    pub socket: Option<Value>,
}

impl Default for SerialConfig {
    fn default() -> Self {
        Self {
            mode: SerialOutputMode::Null,
            file: None,
            socket: None,
        }
    }
}

/// The VM configuration: what `vm.create` takes and `vm.info` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// vCPUs and their PV settings (Cloud Hypervisor's `CpusConfig` plus `kvm_pv`).
    #[serde(default)]
    pub cpus: CpusConfig,
    /// Guest RAM.
    #[serde(default)]
    pub memory: MemoryConfig,
    /// The kernel, initramfs and command line.
    pub payload: PayloadConfig,
    /// The serial port.
    #[serde(default)]
    pub serial: SerialConfig,
    /// Cloud Hypervisor's fields that pv-vmm does not implement.
    #[serde(flatten)]
    pub cloud_hypervisor: CloudHypervisorFields,
}

/// Cloud Hypervisor's `VmConfig` fields beyond what pv-vmm implements: each deserializes
/// (as JSON, unchecked by serde), none is ever serialized back, and [`VmConfig::check`]
/// accepts each only at a value in [`VM_DEFAULTS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudHypervisorFields {
    #[serde(default, skip_serializing)]
    rate_limit_groups: Option<Value>,
    #[serde(default, skip_serializing)]
    disks: Option<Value>,
    #[serde(default, skip_serializing)]
    net: Option<Value>,
    #[serde(default, skip_serializing)]
    rng: Option<Value>,
    #[serde(default, skip_serializing)]
    balloon: Option<Value>,
    #[serde(default, skip_serializing)]
    generic_vhost_user: Option<Value>,
    #[serde(default, skip_serializing)]
    fs: Option<Value>,
    #[serde(default, skip_serializing)]
    pmem: Option<Value>,
    #[serde(default, skip_serializing)]
    console: Option<Value>,
    #[serde(default, skip_serializing)]
    debug_console: Option<Value>,
    #[serde(default, skip_serializing)]
    devices: Option<Value>,
    #[serde(default, skip_serializing)]
    user_devices: Option<Value>,
    #[serde(default, skip_serializing)]
    vdpa: Option<Value>,
    #[serde(default, skip_serializing)]
    vsock: Option<Value>,
    #[serde(default, skip_serializing)]
    pvmemcontrol: Option<Value>,
    #[serde(default, skip_serializing)]
    pvpanic: Option<Value>,
    #[serde(default, skip_serializing)]
    iommu: Option<Value>,
    #[serde(default, skip_serializing)]
    numa: Option<Value>,
    #[serde(default, skip_serializing)]
    watchdog: Option<Value>,
    #[serde(default, skip_serializing)]
    rtc: Option<Value>,
    #[serde(default, skip_serializing)]
    gdb: Option<Value>,
    #[serde(default, skip_serializing)]
    pci_segments: Option<Value>,
    #[serde(default, skip_serializing)]
    platform: Option<Value>,
    #[serde(default, skip_serializing)]
    tpm: Option<Value>,
    #[serde(default, skip_serializing)]
    landlock_enable: Option<Value>,
    #[serde(default, skip_serializing)]
    landlock_rules: Option<Value>,
    #[serde(default, skip_serializing)]
    ivshmem: Option<Value>,
}

impl CloudHypervisorFields {
    /// Each field with its value, in Cloud Hypervisor's order.
    fn fields(&self) -> [(&'static str, &Option<Value>); 27] {
        [
            ("rate_limit_groups", &self.rate_limit_groups),
            ("disks", &self.disks),
            ("net", &self.net),
            ("rng", &self.rng),
            ("balloon", &self.balloon),
            ("generic_vhost_user", &self.generic_vhost_user),
            ("fs", &self.fs),
            ("pmem", &self.pmem),
            ("console", &self.console),
            ("debug_console", &self.debug_console),
            ("devices", &self.devices),
            ("user_devices", &self.user_devices),
            ("vdpa", &self.vdpa),
            ("vsock", &self.vsock),
            ("pvmemcontrol", &self.pvmemcontrol),
            ("pvpanic", &self.pvpanic),
            ("iommu", &self.iommu),
            ("numa", &self.numa),
            ("watchdog", &self.watchdog),
            ("rtc", &self.rtc),
            ("gdb", &self.gdb),
            ("pci_segments", &self.pci_segments),
            ("platform", &self.platform),
            ("tpm", &self.tpm),
            ("landlock_enable", &self.landlock_enable),
            ("landlock_rules", &self.landlock_rules),
            ("ivshmem", &self.ivshmem),
        ]
    }
}

/// The values of [`CloudHypervisorFields`] that mean "not used": Cloud Hypervisor's
/// defaults, as its `vm.info` shows them (`null` and an empty list always count). Fields
/// not listed accept only those two. A default that is a device Cloud Hypervisor adds and
/// pv-vmm lacks is named in [`VmConfig::not_provided`].
pub const VM_DEFAULTS: &[(&str, &str)] = &[
    ("rng", r#"{"src":"/dev/urandom","pci_segment":0}"#),
    ("rng", r#"{"src":"/dev/urandom"}"#),
    ("console", r#"{"mode":"Tty","pci_segment":0}"#),
    ("console", r#"{"mode":"Tty"}"#),
    ("console", r#"{"mode":"Off"}"#),
    ("console", r#"{"mode":"Null"}"#),
    ("debug_console", r#"{"mode":"Off","iobase":233}"#),
    ("debug_console", r#"{"mode":"Off"}"#),
    ("pvpanic", "false"),
    ("iommu", "false"),
    ("watchdog", "false"),
    ("gdb", "false"),
    ("landlock_enable", "false"),
];

/// The default devices of Cloud Hypervisor that pv-vmm does not provide, and how each
/// looks in a config: (field, the value that asks for it).
const DEFAULT_DEVICES_NOT_PROVIDED: &[(&str, &str, &str)] = &[
    (
        "rng",
        r#"{"src":"/dev/urandom","pci_segment":0}"#,
        "virtio-rng",
    ),
    ("rng", r#"{"src":"/dev/urandom"}"#, "virtio-rng"),
    (
        "console",
        r#"{"mode":"Tty","pci_segment":0}"#,
        "virtio-console",
    ),
    ("console", r#"{"mode":"Tty"}"#, "virtio-console"),
];

/// Whether `value` of `field` is one of the values `table` lists for it, or null, or an
/// empty list.
fn is_default(table: &[(&str, &str)], field: &str, value: &Value) -> bool {
    value.is_null()
        || value.as_array().is_some_and(Vec::is_empty)
        || table.iter().any(|(f, text)| {
            *f == field && serde_json::from_str::<Value>(text).is_ok_and(|d| d == *value)
        })
}

/// A value for a message: its JSON, cut at 80 characters.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// A VM configuration that cannot be used; each names the field.
#[derive(Debug, thiserror::Error)]
pub enum VmConfigError {
    /// `memory.size` out of range.
    #[error("memory.size={size}: {reason}")]
    MemorySize {
        /// The value.
        size: u64,
        /// Why.
        reason: &'static str,
    },
    /// `serial.mode` and `serial.file` do not fit together.
    #[error("serial: {0}")]
    Serial(&'static str),
    /// A Cloud Hypervisor field pv-vmm does not implement, with a value other than its
    /// default.
    #[error("{field}={value}: pv-vmm does not implement {field}; leave it out or at Cloud Hypervisor's default")]
    Unsupported {
        /// The field (`disks`, `memory.hugepages`).
        field: String,
        /// Its value (JSON, shortened).
        value: String,
    },
    /// A field neither pv-vmm nor Cloud Hypervisor knows.
    #[error("unknown field `{0}`")]
    UnknownField(String),
    /// A payload file cannot be used.
    #[error("payload.{field}={path}: {reason}")]
    Payload {
        /// `kernel` or `initramfs`.
        field: &'static str,
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
}

impl VmConfig {
    /// The configuration the command line describes (`--kernel` given).
    pub fn from_cli(cli: &Cli, kernel: PathBuf) -> Result<Self, ConfigError> {
        let serial = match config::parse_serial(&cli.serial)? {
            SerialMode::Tty => SerialConfig {
                mode: SerialOutputMode::Tty,
                ..SerialConfig::default()
            },
            SerialMode::File(path) => SerialConfig {
                mode: SerialOutputMode::File,
                file: Some(path),
                socket: None,
            },
            SerialMode::Null => SerialConfig::default(),
        };
        Ok(Self {
            cpus: config::parse_cpus(&cli.cpus)?,
            memory: config::parse_memory(&cli.memory)?,
            payload: PayloadConfig {
                kernel,
                initramfs: cli.initramfs.clone(),
                cmdline: cli.cmdline.clone(),
            },
            serial,
            cloud_hypervisor: CloudHypervisorFields::default(),
        })
    }

    /// Refuses each Cloud Hypervisor field pv-vmm does not implement that asks for
    /// something (a value other than Cloud Hypervisor's default, a non-empty device list).
    pub fn check_cloud_hypervisor_fields(&self) -> Result<(), VmConfigError> {
        let unsupported = |field: String, value: &Value| VmConfigError::Unsupported {
            field,
            value: shown(value),
        };
        for (field, value) in self.cloud_hypervisor.fields() {
            if let Some(value) = value
                .as_ref()
                .filter(|v| !is_default(VM_DEFAULTS, field, v))
            {
                return Err(unsupported(field.to_owned(), value));
            }
        }
        if let Some(socket) = self.serial.socket.as_ref().filter(|v| !v.is_null()) {
            return Err(unsupported("serial.socket".to_owned(), socket));
        }
        for (field, value) in &self.memory.cloud_hypervisor {
            if !MEMORY_DEFAULTS.iter().any(|(f, _)| f == field) {
                return Err(VmConfigError::UnknownField(format!("memory.{field}")));
            }
            if !is_default(MEMORY_DEFAULTS, field, value) {
                return Err(unsupported(format!("memory.{field}"), value));
            }
        }
        Ok(())
    }

    /// The devices Cloud Hypervisor would give this config by default and pv-vmm does not
    /// (e.g. `virtio-rng` for `rng` at its default): for one log line at `vm.create`.
    pub fn not_provided(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (field, value) in self.cloud_hypervisor.fields() {
            let Some(value) = value else { continue };
            for (f, text, device) in DEFAULT_DEVICES_NOT_PROVIDED {
                if *f == field
                    && serde_json::from_str::<Value>(text).is_ok_and(|d| d == *value)
                    && !out.contains(device)
                {
                    out.push(*device);
                }
            }
        }
        out
    }

    /// Checks what the JSON schema cannot: sizes, the serial file, the payload files, and
    /// Cloud Hypervisor's fields pv-vmm lacks ([`VmConfig::check_cloud_hypervisor_fields`]).
    /// The `cpus` part (`kvm_hyperv` included) is validated against the host separately.
    pub fn check(&self) -> Result<(), VmConfigError> {
        self.check_cloud_hypervisor_fields()?;
        let size = self.memory.size;
        config::check_memory_size(size)
            .map_err(|reason| VmConfigError::MemorySize { size, reason })?;
        match (self.serial.mode, &self.serial.file) {
            (SerialOutputMode::File, None) => {
                return Err(VmConfigError::Serial("mode File needs `file`"))
            }
            (SerialOutputMode::File, Some(_)) | (_, None) => {}
            (_, Some(_)) => return Err(VmConfigError::Serial("`file` needs mode File")),
        }
        crate::boot::check_kernel(&self.payload.kernel).map_err(|e| VmConfigError::Payload {
            field: "kernel",
            path: self.payload.kernel.display().to_string(),
            reason: crate::error::chain(&e),
        })?;
        if let Some(initramfs) = &self.payload.initramfs {
            std::fs::metadata(initramfs).map_err(|e| VmConfigError::Payload {
                field: "initramfs",
                path: initramfs.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// The serial mode in the command line's terms.
    pub fn serial_mode(&self) -> SerialMode {
        match (self.serial.mode, &self.serial.file) {
            (SerialOutputMode::Tty, _) => SerialMode::Tty,
            (SerialOutputMode::File, Some(path)) => SerialMode::File(path.clone()),
            _ => SerialMode::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<VmConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn minimal_config_takes_the_defaults() {
        let cfg = parse(r#"{"payload":{"kernel":"/k"}}"#).expect("parses");
        assert_eq!(cfg.memory.size, DEFAULT_MEMORY);
        assert!(cfg.memory.thp);
        assert_eq!(cfg.cpus.boot_vcpus, 1);
        assert_eq!(cfg.payload.cmdline, "console=ttyS0");
        assert_eq!(cfg.serial_mode(), SerialMode::Null);
    }

    #[test]
    fn memory_thp_is_cloud_hypervisors_field() {
        let cfg = parse(r#"{"payload":{"kernel":"/k"},"memory":{"size":1073741824,"thp":false}}"#)
            .expect("parses");
        assert_eq!((cfg.memory.size, cfg.memory.thp), (1 << 30, false));
        let err = parse(r#"{"payload":{"kernel":"/k"},"memory":{"thp":"off"}}"#)
            .expect_err("a string")
            .to_string();
        assert!(err.contains("expected a boolean"), "{err}");
    }

    #[test]
    fn cloud_hypervisor_cpus_json_parses() {
        let cfg = parse(
            r#"{"cpus":{"boot_vcpus":2,"max_vcpus":2,"kvm_hyperv":false,"max_phys_bits":46,"features":{"amx":false},"nested":true,"core_scheduling":"Vm","profile":"Host","kvm_pv":{"dedicated":true}},"payload":{"kernel":"/k"},"serial":{"mode":"File","file":"/tmp/s"}}"#,
        )
        .expect("parses");
        assert_eq!(cfg.cpus.boot_vcpus, 2);
        assert!(cfg.cpus.kvm_pv.dedicated);
        assert_eq!(cfg.serial_mode(), SerialMode::File("/tmp/s".into()));
    }

    #[test]
    fn bad_json_names_the_problem() {
        for (json, needle) in [
            (
                r#"{"payload":{"kernel":"/k"},"disk":[]}"#,
                "unknown field `disk`",
            ),
            (r#"{}"#, "missing field `payload`"),
            (r#"{"payload":{"kernel":1}}"#, "invalid type"),
            (
                r#"{"payload":{"kernel":"/k"},"memory":{"size":"1G"}}"#,
                "invalid type",
            ),
            (
                r#"{"payload":{"kernel":"/k"},"serial":{"mode":"Pty"}}"#,
                "unknown variant `Pty`",
            ),
            (
                r#"{"payload":{"kernel":"/k"},"cpus":{"boot_vcpus":1,"max_vcpus":1,"kvm_pv":{"dedicate":true}}}"#,
                "unknown field `dedicate`",
            ),
        ] {
            let err = parse(json).expect_err(json).to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    /// What the patched Cloud Hypervisor's `vm.info` returned for `ch-remote create` with
    /// only a kernel and a command line (captured on this project's development host; the
    /// kernel path replaced).
    const CLOUD_HYPERVISOR_MINIMAL: &str =
        include_str!("../../tests/data/cloud-hypervisor-minimal-config.json");

    #[test]
    fn cloud_hypervisors_own_minimal_config_is_accepted() {
        let cfg = parse(CLOUD_HYPERVISOR_MINIMAL).expect("parses");
        cfg.check_cloud_hypervisor_fields()
            .expect("all at defaults");
        assert_eq!(cfg.not_provided(), ["virtio-rng", "virtio-console"]);
        assert_eq!(cfg.memory.size, 512 << 20);
        assert_eq!(cfg.serial_mode(), SerialMode::Null);
        // pv-vmm's own config round-trips, and shows none of the fields it lacks.
        let json = serde_json::to_string(&cfg).expect("serializes");
        assert!(
            !json.contains("rng") && !json.contains("mergeable"),
            "{json}"
        );
        let again = parse(&json).expect("parses again");
        assert_eq!(serde_json::to_string(&again).expect("serializes"), json);
        assert!(again.not_provided().is_empty());
    }

    #[test]
    fn cloud_hypervisor_fields_pv_vmm_lacks_are_refused_by_name() {
        let with = |extra: &str| {
            parse(&format!(r#"{{"payload":{{"kernel":"/k"}},{extra}}}"#))
                .unwrap_or_else(|e| panic!("{extra}: {e}"))
        };
        for (extra, field) in [
            (r#""disks":[{"path":"/disk.img"}]"#, "disks="),
            (r#""net":[{"tap":"tap0"}]"#, "net="),
            (r#""pvpanic":true"#, "pvpanic=true"),
            (
                r#""serial":{"mode":"Null","socket":"/tmp/s"}"#,
                "serial.socket=",
            ),
            (r#""console":{"mode":"File","file":"/tmp/c"}"#, "console="),
            (r#""rng":{"src":"/dev/random"}"#, "rng="),
            (r#""vsock":{"cid":3,"socket":"/tmp/v"}"#, "vsock="),
            (
                r#""memory":{"size":536870912,"hugepages":true}"#,
                "memory.hugepages=true",
            ),
            (
                r#""memory":{"size":536870912,"zones":[{"id":"z","size":1}]}"#,
                "memory.zones=",
            ),
            (
                r#""memory":{"size":536870912,"hotplug_method":"VirtioMem"}"#,
                "memory.hotplug_method=",
            ),
        ] {
            let err = with(extra)
                .check_cloud_hypervisor_fields()
                .expect_err(extra)
                .to_string();
            assert!(err.starts_with(field), "{extra}: {err}");
            assert!(err.contains("pv-vmm does not implement"), "{extra}: {err}");
        }
        // At their defaults, or left empty: accepted.
        for extra in [
            r#""disks":[]"#,
            r#""net":null"#,
            r#""pvpanic":false"#,
            r#""console":{"mode":"Off"}"#,
            r#""memory":{"size":536870912,"mergeable":false,"hotplug_method":"Acpi","zones":null}"#,
        ] {
            with(extra)
                .check_cloud_hypervisor_fields()
                .unwrap_or_else(|e| panic!("{extra}: {e}"));
        }
        let err = with(r#""memory":{"size":536870912,"sise":1}"#)
            .check_cloud_hypervisor_fields()
            .expect_err("typo")
            .to_string();
        assert_eq!(err, "unknown field `memory.sise`");
        // A long value is shortened in the message.
        let long = format!(r#""disks":[{{"path":"/{}"}}]"#, "d".repeat(500));
        let err = with(&long).check().expect_err("long").to_string();
        assert!(err.len() < 250 && err.contains("..."), "{err}");
    }

    #[test]
    fn check_refuses_what_cannot_boot() {
        let mut cfg = parse(r#"{"payload":{"kernel":"/nonexistent/kernel"}}"#).expect("parses");
        let err = cfg.check().expect_err("no kernel").to_string();
        assert!(
            err.starts_with("payload.kernel=/nonexistent/kernel"),
            "{err}"
        );
        cfg.memory.size = 1 << 20;
        assert!(cfg
            .check()
            .expect_err("small")
            .to_string()
            .contains("memory.size=1048576"));
        cfg.memory.size = DEFAULT_MEMORY + 1;
        assert!(cfg.check().expect_err("odd").to_string().contains("4 KiB"));
        cfg.memory.size = DEFAULT_MEMORY;
        cfg.serial.mode = SerialOutputMode::File;
        assert!(cfg
            .check()
            .expect_err("no file")
            .to_string()
            .contains("needs `file`"));
        cfg.serial.mode = SerialOutputMode::Tty;
        cfg.serial.file = Some("/x".into());
        assert!(cfg
            .check()
            .expect_err("file")
            .to_string()
            .contains("needs mode File"));
        cfg.serial = SerialConfig::default();
        // kvm_hyperv is the host's question (vm.create validates it against KVM), not this
        // check's: the error is still the missing kernel.
        cfg.cpus.kvm_hyperv = true;
        assert!(cfg
            .check()
            .expect_err("no kernel")
            .to_string()
            .starts_with("payload.kernel="));
    }
}
