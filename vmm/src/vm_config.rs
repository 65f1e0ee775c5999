//! The VM configuration as the API takes it (`PUT /api/v1/vm.create`): a Cloud Hypervisor
//! shaped subset of its `VmConfig` (`cpus`, `memory`, `payload`, `serial`), and the
//! conversion from the command line into the same type, so both paths boot the same way.

use std::path::PathBuf;

use hypervisor_glue::cpus::CpusConfig;
use serde::{Deserialize, Serialize};

use crate::config::{self, Cli, ConfigError, SerialMode, DEFAULT_MEMORY, MAX_MEMORY, MIN_MEMORY};

fn default_memory_size() -> u64 {
    DEFAULT_MEMORY
}

/// Guest RAM (`memory` in Cloud Hypervisor's `VmConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Bytes of guest RAM (default 512 MiB).
    #[serde(default = "default_memory_size")]
    pub size: u64,
    /// Back guest RAM with transparent huge pages: on asks the host kernel for them
    /// (`madvise(MADV_HUGEPAGE)`; the default, as in Cloud Hypervisor and QEMU), off asks
    /// against them (`MADV_NOHUGEPAGE`).
    #[serde(default = "default_thp")]
    pub thp: bool,
}

fn default_thp() -> bool {
    true
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            size: DEFAULT_MEMORY,
            thp: default_thp(),
        }
    }
}

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
}

impl Default for SerialConfig {
    fn default() -> Self {
        Self {
            mode: SerialOutputMode::Null,
            file: None,
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
                file: None,
            },
            SerialMode::File(path) => SerialConfig {
                mode: SerialOutputMode::File,
                file: Some(path),
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
        })
    }

    /// Checks what the JSON schema cannot: sizes, the serial file, the payload files. The
    /// `cpus` part (`kvm_hyperv` included) is validated against the host separately.
    pub fn check(&self) -> Result<(), VmConfigError> {
        let size = self.memory.size;
        let bad = |reason| Err(VmConfigError::MemorySize { size, reason });
        if size < MIN_MEMORY {
            return bad("at least 64 MiB is needed to boot Linux");
        }
        if size > MAX_MEMORY {
            return bad("at most 1 TiB is supported");
        }
        if size % 4096 != 0 {
            return bad("must be a multiple of 4 KiB");
        }
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
            reason: crate::control::chain(&e),
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
                r#"{"payload":{"kernel":"/k"},"disks":[]}"#,
                "unknown field `disks`",
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
