//! The command line, in Cloud Hypervisor's spelling: clap for the flags, the glue's option
//! parser for the `key=value` strings; [`vm_config`] is the VM's configuration that the
//! command line and the API's `vm.create` both make.

use std::path::PathBuf;

use clap::Parser;
use hypervisor_glue::cpus::CpusConfig;
use hypervisor_glue::option_parser::{parse_toggle, OptionError, OptionParser};

use self::vm_config::MemoryConfig;

pub mod vm_config;

/// Default guest RAM (Cloud Hypervisor's default).
pub const DEFAULT_MEMORY: u64 = 512 << 20;
/// Smallest guest RAM this VMM boots Linux with.
pub const MIN_MEMORY: u64 = 64 << 20;
/// Largest guest RAM this VMM accepts.
pub const MAX_MEMORY: u64 = 1 << 40;

/// pv-vmm: boots a Linux guest on KVM with the paravirtual scalability features (PV TLB
/// flush, PV send-IPI, disabled exits for dedicated vCPUs) configured through `--cpus`.
#[derive(Debug, Parser)]
#[command(name = "pv-vmm", version, about, long_about = None)]
pub struct Cli {
    /// The guest kernel: a bzImage, or an ELF image with a PVH entry note (PVH boot).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// The initramfs to load beside the kernel.
    #[arg(long, value_name = "PATH")]
    pub initramfs: Option<PathBuf>,

    /// The kernel command line.
    #[arg(long, value_name = "TEXT", default_value = "console=ttyS0")]
    pub cmdline: String,

    /// vCPUs and their PV features, as key=value pairs (see --help).
    #[arg(long, value_name = "OPTIONS", default_value = "boot=1", long_help = cpus_long_help())]
    pub cpus: String,

    /// Guest RAM: size=BYTES with an optional K, M or G suffix; thp=on|off: transparent
    /// huge pages asked for (default) or refused.
    #[arg(long, value_name = "OPTIONS", default_value = "size=512M")]
    pub memory: String,

    /// Where the first serial port goes: tty, file=PATH or null.
    #[arg(long, value_name = "OPTIONS", default_value = "tty")]
    pub serial: String,

    /// The virtio console; only `off` is supported (the serial port is the console).
    #[arg(long, value_name = "OPTIONS", default_value = "off")]
    pub console: String,

    /// The REST API socket: path=PATH (bound by pv-vmm), or fd=N (a listening Unix socket
    /// inherited from the parent, as Cloud Hypervisor takes it).
    #[arg(long, value_name = "OPTIONS")]
    pub api_socket: Option<String>,

    /// Seccomp filters per thread: true (a forbidden system call ends pv-vmm), false (no
    /// filters) or log (the kernel logs forbidden calls and lets them through).
    #[arg(long, value_name = "true|false|log", default_value = "true")]
    pub seccomp: String,

    /// More logging (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

fn cpus_long_help() -> String {
    format!(
        "vCPUs and their PV features, as key=value pairs separated by commas.\n\n{}",
        hypervisor_glue::help::cpus_help_text()
    )
}

/// Where the serial port's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialMode {
    /// This process's terminal (stdin feeds the guest).
    Tty,
    /// Appended to a file.
    File(PathBuf),
    /// Discarded.
    Null,
}

/// A command line that cannot be used; each names the flag and the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A `key=value` string did not parse.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// `--memory size` out of range.
    #[error("--memory size={value}: {reason}")]
    MemorySize {
        /// The value as given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// `--memory thp` not a toggle.
    #[error("--memory thp={value}: {reason}")]
    MemoryThp {
        /// The value as given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A flag value this VMM does not support.
    #[error("{flag} {value}: {reason}")]
    Unsupported {
        /// The flag.
        flag: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// No kernel.
    #[error("--kernel is required: this VMM boots a kernel given on the command line")]
    NoKernel,
}

/// Parses `size=<n>[K|M|G],thp=on|off` as Cloud Hypervisor does (binary units; `thp`
/// defaults to on).
pub fn parse_memory(value: &str) -> Result<MemoryConfig, ConfigError> {
    let mut parser = OptionParser::new("--memory", &["size", "thp"]);
    parser.parse(value)?;
    let thp = match parser.get("thp") {
        None => true,
        Some(value) => {
            parse_toggle(&value).map_err(|reason| ConfigError::MemoryThp { value, reason })?
        }
    };
    let size = match parser.get("size") {
        None => DEFAULT_MEMORY,
        Some(size) => parse_memory_size(&size)?,
    };
    Ok(MemoryConfig {
        size,
        thp,
        ..MemoryConfig::default()
    })
}

/// `--memory size=`: bytes with an optional K, M or G suffix, within the supported range.
fn parse_memory_size(size: &str) -> Result<u64, ConfigError> {
    let bad = |reason: &str| ConfigError::MemorySize {
        value: size.to_owned(),
        reason: reason.to_owned(),
    };
    let (digits, shift) = match size.trim().strip_suffix(['K', 'M', 'G']) {
        Some(d) if size.ends_with('K') => (d, 10),
        Some(d) if size.ends_with('M') => (d, 20),
        Some(d) => (d, 30),
        None => (size.trim(), 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| bad("expected a number of bytes with an optional K, M or G suffix"))?;
    let bytes = n.checked_mul(1 << shift).ok_or_else(|| bad("too large"))?;
    check_memory_size(bytes).map_err(bad)?;
    Ok(bytes)
}

/// The one rule for a guest's RAM size, from the command line and from `vm.create`: at least
/// [`MIN_MEMORY`], at most [`MAX_MEMORY`], whole 4K pages. The error says why not.
pub fn check_memory_size(bytes: u64) -> Result<(), &'static str> {
    if bytes < MIN_MEMORY {
        return Err("at least 64M (64 MiB) is needed to boot Linux");
    }
    if bytes > MAX_MEMORY {
        return Err("at most 1024G (1 TiB) is supported");
    }
    if bytes % 4096 != 0 {
        return Err("must be a multiple of 4K (4 KiB)");
    }
    Ok(())
}

/// Parses `tty`, `file=<path>` or `null`.
pub fn parse_serial(value: &str) -> Result<SerialMode, ConfigError> {
    match value.trim() {
        "tty" => Ok(SerialMode::Tty),
        "null" | "off" => Ok(SerialMode::Null),
        other if !other.contains('=') => Err(ConfigError::Unsupported {
            flag: "--serial",
            value: other.to_owned(),
            reason: "expected tty, file=PATH or null",
        }),
        other => {
            let mut parser = OptionParser::new("--serial", &["file"]);
            parser.parse(other)?;
            parser
                .get("file")
                .map(|p| SerialMode::File(PathBuf::from(p)))
                .ok_or(ConfigError::Unsupported {
                    flag: "--serial",
                    value: other.to_owned(),
                    reason: "expected tty, file=<path> or null",
                })
        }
    }
}

/// Parses `--cpus`.
pub fn parse_cpus(value: &str) -> Result<CpusConfig, ConfigError> {
    Ok(CpusConfig::parse(value)?)
}

/// Checks `--console` (only `off`).
pub fn check_console(value: &str) -> Result<(), ConfigError> {
    if value.trim() == "off" {
        Ok(())
    } else {
        Err(ConfigError::Unsupported {
            flag: "--console",
            value: value.to_owned(),
            reason: "only `off` is supported: the guest console is the serial port (--serial)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        let size = |s: &str| parse_memory(s).ok().map(|m| m.size);
        assert_eq!(size("size=512M"), Some(512 << 20));
        assert_eq!(size("size=1G"), Some(1 << 30));
        assert_eq!(size("size=131072K"), Some(128 << 20));
        assert_eq!(size("size=268435456"), Some(256 << 20));
        assert_eq!(size(""), Some(DEFAULT_MEMORY));
    }

    #[test]
    fn memory_thp_toggles_and_defaults_on() {
        let thp = |s: &str| parse_memory(s).ok().map(|m| m.thp);
        assert_eq!(thp(""), Some(true));
        assert_eq!(thp("size=1G"), Some(true));
        assert_eq!(thp("size=1G,thp=off"), Some(false));
        assert_eq!(thp("thp=on"), Some(true));
        assert_eq!(thp("thp=false"), Some(false));
        let err = parse_memory("size=1G,thp=maybe")
            .expect_err("maybe")
            .to_string();
        assert_eq!(
            err,
            "--memory thp=maybe: expected on or off (or true or false)"
        );
    }

    #[test]
    fn bad_memory_names_the_value() {
        for (input, needle) in [
            ("size=12X", "--memory size=12X: expected a number"),
            ("size=1M", "at least 64M"),
            ("size=4096G", "at most 1024G"),
            ("size=99999999999999999999G", "expected a number"),
            ("size=18014398509481983G", "too large"),
            ("size=67108865", "multiple of 4K"),
            (
                "sise=1G",
                "unknown key `sise` in --memory; valid keys: size, thp",
            ),
            ("size", "needs a value"),
        ] {
            let err = parse_memory(input).expect_err(input).to_string();
            assert!(err.contains(needle), "{input}: {err}");
        }
    }

    #[test]
    fn serial_modes() {
        assert_eq!(parse_serial("tty").ok(), Some(SerialMode::Tty));
        assert_eq!(parse_serial("null").ok(), Some(SerialMode::Null));
        assert_eq!(
            parse_serial("file=/tmp/x.log").ok(),
            Some(SerialMode::File("/tmp/x.log".into()))
        );
        assert!(parse_serial("socket=/x").is_err());
        assert!(parse_serial("pty").is_err());
        assert!(check_console("off").is_ok());
        assert!(check_console("tty").is_err());
    }

    #[test]
    fn cli_parses_cloud_hypervisor_spelling() {
        let cli = Cli::try_parse_from([
            "pv-vmm",
            "--kernel",
            "/k",
            "--cpus",
            "boot=4,kvm_pv=[steal_time,pv_tlb_flush]",
            "--memory",
            "size=1G",
            "-vv",
        ])
        .expect("parses");
        assert_eq!(cli.verbose, 2);
        assert_eq!(parse_cpus(&cli.cpus).expect("cpus").boot_vcpus, 4);
        assert!(Cli::try_parse_from(["pv-vmm", "--kernal", "/k"]).is_err());
    }
}
