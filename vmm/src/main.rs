//! `pv-vmm`: a reference VMM on rust-vmm crates that boots a Linux guest with KVM's
//! paravirtual scalability features, configured the way a Cloud Hypervisor build would
//! configure them (through `hypervisor-glue`).

mod acpi;
mod boot;
mod config;
mod devices;
mod layout;
mod terminal;
mod topology;
mod vcpu;
mod vm;

use std::error::Error;
use std::io::Read;
use std::process::ExitCode;
use std::sync::mpsc;

use clap::Parser;
use kvm_ioctls::Kvm;
use pv_features::cpuid::KvmFeatures;
use pv_features::host::HostPv;

use crate::config::{Cli, ConfigError, SerialMode};
use crate::devices::lock;
use crate::topology::Topology;
use crate::vcpu::Event;
use crate::vm::{Outcome, VmSpec};

/// The features of [`KvmFeatures::VMM_PROVIDED`] this VMM implements: none yet (no MSI
/// routing with extended destination ids, no MAP_GPA_RANGE handling, no migration).
const VMM_BACKS: KvmFeatures = KvmFeatures::empty();

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pv-vmm: error: {}", chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line.
fn chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .parse_env("PV_VMM_LOG")
        .format_timestamp_millis()
        .init();
}

fn run(cli: Cli) -> Result<ExitCode, Box<dyn Error>> {
    config::check_console(&cli.console)?;
    if let Some(api) = &cli.api_socket {
        return Err(Box::new(ConfigError::Unsupported {
            flag: "--api-socket",
            value: api.clone(),
            reason: "the REST API is not implemented in this build yet",
        }));
    }
    let kernel = cli.kernel.clone().ok_or(ConfigError::NoKernel)?;
    let memory = config::parse_memory(&cli.memory)?;
    let serial_mode = config::parse_serial(&cli.serial)?;
    let cpus = config::parse_cpus(&cli.cpus)?;
    if cpus.kvm_hyperv {
        return Err(Box::new(ConfigError::Unsupported {
            flag: "--cpus",
            value: "kvm_hyperv=on".to_owned(),
            reason: "this build does not provide the Hyper-V leaves yet",
        }));
    }
    boot::check_bzimage(&kernel)?;
    if let Some(initramfs) = &cli.initramfs {
        std::fs::metadata(initramfs)
            .map_err(|e| format!("cannot read initramfs {}: {e}", initramfs.display()))?;
    }

    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    let host = HostPv::probe(&kvm)?;
    let host_cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let validated = cpus.validate(&host, host_cpus, VMM_BACKS)?;
    for warning in &validated.warnings {
        log::warn!("{warning}");
    }
    for dropped in &validated.effective.dropped {
        log::info!(
            "PV feature {} not offered: {}",
            dropped.feature,
            dropped.message
        );
    }
    for note in &validated.effective.notes {
        log::info!("{note}");
    }
    let topology = match cpus.topology {
        Some(t) => Topology {
            threads_per_core: u32::from(t.threads_per_core),
            cores_per_package: u32::from(t.cores_per_die) * u32::from(t.dies_per_package),
        },
        None => Topology {
            threads_per_core: 1,
            cores_per_package: cpus.boot_vcpus,
        },
    };
    let spec = VmSpec {
        kernel,
        initramfs: cli.initramfs.clone(),
        cmdline: cli.cmdline.clone(),
        memory,
        vcpus: cpus.boot_vcpus,
        topology,
        phys_bits: cpus.max_phys_bits,
    };

    let (tx, rx) = mpsc::channel();
    vcpu::install_kick_handler().map_err(|e| format!("installing the vCPU kick signal: {e}"))?;
    spawn_signal_thread(tx.clone())?;
    let (out, raw_terminal): (devices::SerialOut, bool) = match &serial_mode {
        SerialMode::Tty => (Box::new(std::io::stdout()), terminal::stdin_is_tty()),
        SerialMode::File(path) => (
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("--serial file={}: {e}", path.display()))?,
            ),
            false,
        ),
        SerialMode::Null => (Box::new(std::io::sink()), false),
    };
    let (serial, serial_irq) = vm::new_serial(out)?;
    let _terminal = raw_terminal.then(terminal::RawMode::enter).transpose()?;
    if serial_mode == SerialMode::Tty {
        let serial = serial.clone();
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || feed_stdin(&serial))?;
    }

    loop {
        let outcome = vm::run_once(
            &kvm,
            &spec,
            validated.effective.clone(),
            &serial,
            &serial_irq,
            &rx,
            &tx,
        )?;
        match outcome {
            Outcome::PowerOff => {
                log::info!("the guest powered off");
                return Ok(ExitCode::SUCCESS);
            }
            Outcome::Reboot => log::info!("the guest rebooted: recreating the VM"),
            Outcome::Fatal(message) => return Err(message.into()),
            Outcome::Signal(sig) => {
                log::warn!("stopped by signal {sig}");
                return Ok(ExitCode::from(128u8.saturating_add(sig as u8)));
            }
        }
    }
}

/// Forwards SIGINT and SIGTERM to the main loop so the VM stops cleanly and the terminal is
/// restored.
fn spawn_signal_thread(tx: mpsc::Sender<Event>) -> Result<(), Box<dyn Error>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(Event::Signal(sig)).is_err() {
                    break;
                }
            }
        })?;
    Ok(())
}

/// Copies stdin into the serial port's receive FIFO until stdin closes.
fn feed_stdin(serial: &devices::SharedSerial) {
    let mut stdin = std::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let mut pending = &buf[..n];
                while !pending.is_empty() {
                    let taken = lock(serial).enqueue_raw_bytes(pending).unwrap_or(0);
                    pending = &pending[taken..];
                    if !pending.is_empty() {
                        // The FIFO is full: let the guest drain it.
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("reading stdin: {e}");
                return;
            }
        }
    }
}
