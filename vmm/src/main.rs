//! `pv-vmm`: a reference VMM on rust-vmm crates that boots a Linux guest with KVM's
//! paravirtual scalability features, configured the way a Cloud Hypervisor build would
//! configure them (through `hypervisor-glue`).

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;

use clap::Parser;

use vmm::config::vm_config::VmConfig;
use vmm::config::{self, Cli, ConfigError, SerialMode};
use vmm::control::{Event, Exit, Vmm};
use vmm::error::chain;
use vmm::seccomp::{self, Filters, SeccompMode, ThreadKind};
use vmm::sink::Sink;
use vmm::vcpu;
use vmm::{api, boot, terminal};

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
    let filters = Filters::new(cli.seccomp.parse::<SeccompMode>()?)?;
    let api_path = cli
        .api_socket
        .as_deref()
        .map(api::server::parse_api_socket)
        .transpose()?;
    // With --kernel the VM is described on the command line and boots at once; without it
    // the API must be there to create and boot one.
    let vm_config = match cli.kernel.clone() {
        Some(kernel) => Some(cli_config(&cli, kernel)?),
        None if api_path.is_some() => None,
        None => return Err(Box::new(ConfigError::NoKernel)),
    };

    let (tx, rx) = mpsc::channel();
    // Bound before any other thread starts: binding briefly changes the process's umask.
    let mut socket = api_path
        .as_ref()
        .map(api::server::ApiSocket::open)
        .transpose()?;
    vcpu::install_kick_handler().map_err(|e| format!("installing the vCPU kick signal: {e}"))?;
    if filters.mode() == SeccompMode::Trap {
        seccomp::install_sigsys_handler()?;
    }
    spawn_signal_thread(tx.clone(), &filters)?;
    // SIGINT and SIGTERM are taken by the signal thread only: signal-hook's handler writes
    // to its socket, which no other thread's filter allows. Threads created from here on
    // inherit the mask.
    for sig in [libc::SIGINT, libc::SIGTERM] {
        vmm_sys_util::signal::block_signal(sig)
            .map_err(|e| format!("blocking signal {sig} outside the signal thread: {e}"))?;
    }

    let mut vmm = Vmm::new(tx.clone(), filters.clone());
    let serial_tty = vm_config
        .as_ref()
        .is_some_and(|c| c.serial_mode() == SerialMode::Tty);
    let boot_now = vm_config.is_some();
    if let Some(config) = vm_config {
        vmm.create(config).map_err(|e| e.to_string())?;
    }
    let _terminal = (serial_tty && terminal::stdin_is_tty())
        .then(terminal::RawMode::enter)
        .transpose()?;
    let server = socket
        .as_mut()
        .map(|s| {
            api::server::ApiServer::start(s, Sink::into_channel(tx.clone(), Event::Api), &filters)
        })
        .transpose()?;
    if boot_now {
        vmm.boot().map_err(|e| e.to_string())?;
    }
    drop(tx);
    // From here on the main thread handles guest and API events: filter it first. Every
    // thread it creates from now on (vCPUs of a rebooted VM, stdin) inherits this filter.
    filters.apply(ThreadKind::Vmm)?;
    let exit = vmm.run(&rx);
    if let Some(server) = server {
        server.stop();
    }
    drop(socket);
    match exit? {
        Exit::PowerOff | Exit::VmmShutdown => Ok(ExitCode::SUCCESS),
        Exit::Signal(sig) => Ok(ExitCode::from(128u8.saturating_add(sig as u8))),
    }
}

/// The VM the command line describes, checked in the order the flags are documented.
fn cli_config(cli: &Cli, kernel: PathBuf) -> Result<VmConfig, Box<dyn Error>> {
    config::parse_memory(&cli.memory)?;
    config::parse_serial(&cli.serial)?;
    // Checked against the host (kvm_hyperv=on needs KVM_CAP_HYPERV, ...) by vm.create.
    config::parse_cpus(&cli.cpus)?;
    boot::check_kernel(&kernel)?;
    if let Some(initramfs) = &cli.initramfs {
        std::fs::metadata(initramfs)
            .map_err(|e| format!("cannot read initramfs {}: {e}", initramfs.display()))?;
    }
    Ok(VmConfig::from_cli(cli, kernel)?)
}

/// Forwards SIGINT and SIGTERM to the main loop so the VM stops cleanly and the terminal is
/// restored.
fn spawn_signal_thread(tx: mpsc::Sender<Event>, filters: &Filters) -> Result<(), Box<dyn Error>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    seccomp::spawn("signals".into(), ThreadKind::Signals, filters, move || {
        for sig in signals.forever() {
            if tx.send(Event::Signal(sig)).is_err() {
                break;
            }
        }
    })?;
    Ok(())
}
