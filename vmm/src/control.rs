//! The VMM's main loop: one VM's lifecycle (created, running, paused, shut down) driven by
//! the guest (power off, reset), signals and API requests, all arriving on one channel and
//! handled one at a time on the main thread, which owns the VM.
//!
//! PV changes (`vm.pv`) go through the glue's rules ([`plan_change`]); what is pending is
//! folded into the requested configuration at the next reboot ([`hooks::reboot`]) or when
//! the VM is shut down, and validated again before the VM is recreated.

use std::io::Read;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use hypervisor_glue::change::{plan_change, PvInfo, PvPatch, VmState};
use hypervisor_glue::hooks;
use hypervisor_glue::validate::Validated;
use kvm_ioctls::Kvm;
use pv_features::cpuid::{CpuidBlocks, KvmFeatures};
use pv_features::host::HostPv;
use serde_json::json;
use vmm_sys_util::eventfd::EventFd;

use crate::api::{ApiError, ApiMessage, ApiRequest, ApiResponse};
use crate::config::vm_config::VmConfig;
use crate::config::SerialMode;
use crate::devices::{self, lock, SharedSerial, VmRequest};
use crate::error::chain;
use crate::seccomp::{self, Filters, ThreadKind};
use crate::sink::Sink;
use crate::topology::Topology;
use crate::vcpu::VcpuEvent;
use crate::vm::{self, RunningVm, VcpuThreads, VmSpec};

/// What the vCPU threads, the signal thread and the API tell the VMM's main loop
/// ([`Vmm::run`]).
#[derive(Debug)]
pub enum Event {
    /// A vCPU thread's event (a device's request or a fatal exit), with its VM's generation.
    Vcpu(VcpuEvent),
    /// SIGINT or SIGTERM arrived.
    Signal(i32),
    /// An API request, with the way to answer it.
    Api(ApiMessage),
}

/// The features of [`KvmFeatures::VMM_PROVIDED`] this VMM implements: none yet (no MSI
/// routing with extended destination ids, no MAP_GPA_RANGE handling, no migration).
pub const VMM_BACKS: KvmFeatures = KvmFeatures::empty();

/// Where stdin goes: the serial device of the current VM, if its output is the terminal.
pub type StdinTarget = Arc<Mutex<Option<SharedSerial>>>;

/// Why the main loop ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The guest powered off.
    PowerOff,
    /// `vmm.shutdown`.
    VmmShutdown,
    /// SIGINT or SIGTERM.
    Signal(i32),
}

/// Errors that end the VMM.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A vCPU failed.
    #[error("{0}")]
    Fatal(String),
    /// Building the VM (at boot or reboot) failed.
    #[error("{what}")]
    Boot {
        /// Boot or reboot.
        what: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Every sender of the channel is gone.
    #[error("every event source is gone")]
    Disconnected,
}

/// The KVM system handle and what the host supports, opened on first use.
#[derive(Debug)]
struct Host {
    kvm: Kvm,
    pv: HostPv,
}

/// One VMM: at most one VM.
pub struct Vmm {
    host: Option<Host>,
    config: Option<VmConfig>,
    state: VmState,
    pending: Option<PvPatch>,
    vm: Option<RunningVm>,
    generation: u64,
    serial: Option<(SharedSerial, EventFd)>,
    stdin: StdinTarget,
    stdin_thread: bool,
    events: Sender<Event>,
    filters: Filters,
}

impl std::fmt::Debug for Vmm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vmm")
            .field("state", &self.state)
            .field("config", &self.config)
            .field("pending", &self.pending)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

fn internal(e: &dyn std::error::Error) -> ApiError {
    ApiError::Internal(chain(e))
}

impl Vmm {
    /// A VMM without a VM; vCPU and API events go to `events`; the threads it starts
    /// install `filters`.
    pub fn new(events: Sender<Event>, filters: Filters) -> Self {
        Self {
            host: None,
            config: None,
            state: VmState::Created,
            pending: None,
            vm: None,
            generation: 0,
            serial: None,
            stdin: Arc::new(Mutex::new(None)),
            stdin_thread: false,
            events,
            filters,
        }
    }

    fn host(&mut self) -> Result<&Host, ApiError> {
        if self.host.is_none() {
            let kvm =
                Kvm::new().map_err(|e| ApiError::Internal(format!("cannot open /dev/kvm: {e}")))?;
            let pv = HostPv::probe(&kvm).map_err(|e| internal(&e))?;
            self.host = Some(Host { kvm, pv });
        }
        self.host
            .as_ref()
            .ok_or_else(|| ApiError::Internal("no KVM".to_owned()))
    }

    /// Validates `config` against the host and makes it this VMM's VM (`vm.create`).
    pub fn create(&mut self, config: VmConfig) -> Result<Validated, ApiError> {
        if self.config.is_some() {
            return Err(ApiError::Conflict(
                "vm.create: a VM already exists; vm.delete it first".to_owned(),
            ));
        }
        config
            .check()
            .map_err(|e| ApiError::BadRequest(format!("vm.create: {e}")))?;
        let validated = self.validate(&config)?;
        let missing = config.not_provided();
        if !missing.is_empty() {
            log::info!(
                "vm.create: Cloud Hypervisor's default devices that pv-vmm does not provide: {}",
                missing.join(", ")
            );
        }
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
        self.config = Some(config);
        self.state = VmState::Created;
        self.pending = None;
        Ok(validated)
    }

    fn validate(&mut self, config: &VmConfig) -> Result<Validated, ApiError> {
        let host_cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let host = self.host()?;
        config
            .cpus
            .validate(&host.pv, host_cpus, VMM_BACKS)
            .map_err(|e| ApiError::BadRequest(chain(&e)))
    }

    fn config(&self, what: &str) -> Result<&VmConfig, ApiError> {
        self.config.as_ref().ok_or_else(|| {
            ApiError::NotCreated(format!("{what}: no VM is created; vm.create first"))
        })
    }

    fn require(&self, what: &str, allowed: &[VmState]) -> Result<(), ApiError> {
        self.config(what)?;
        if allowed.contains(&self.state) {
            Ok(())
        } else {
            Err(ApiError::Conflict(format!(
                "{what}: not allowed while the VM is {}",
                self.state
            )))
        }
    }

    fn ensure_serial(&mut self, mode: &SerialMode) -> Result<(SharedSerial, EventFd), ApiError> {
        if let Some((serial, irq)) = &self.serial {
            let irq = irq.try_clone().map_err(|e| internal(&e))?;
            return Ok((serial.clone(), irq));
        }
        let out: devices::SerialOut = match mode {
            SerialMode::Tty => Box::new(std::io::stdout()),
            SerialMode::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        ApiError::BadRequest(format!("serial.file={}: {e}", path.display()))
                    })?,
            ),
            SerialMode::Null => Box::new(std::io::sink()),
        };
        let (serial, irq) = vm::new_serial(out).map_err(|e| internal(&e))?;
        if *mode == SerialMode::Tty {
            *lock(&self.stdin) = Some(serial.clone());
            if !self.stdin_thread {
                // One reader for the process's life; it feeds whichever VM is current.
                let target = self.stdin.clone();
                seccomp::spawn(
                    "stdin".into(),
                    ThreadKind::Stdin,
                    &self.filters,
                    move || feed_stdin(&target),
                )
                .map_err(|e| internal(&e))?;
                self.stdin_thread = true;
            }
        }
        let clone = irq.try_clone().map_err(|e| internal(&e))?;
        self.serial = Some((serial.clone(), irq));
        Ok((serial, clone))
    }

    /// Builds and starts the VM from the current config (`vm.boot`, and after a reboot).
    fn start(&mut self) -> Result<(), ApiError> {
        let config = self.config("vm.boot")?.clone();
        let validated = self.validate(&config)?;
        let (serial, irq) = self.ensure_serial(&config.serial_mode())?;
        let spec = spec_of(&config);
        self.generation += 1;
        let generation = self.generation;
        let events = Sink::into_channel(self.events.clone(), Event::Vcpu);
        let filters = self.filters.clone();
        let host = self.host()?;
        let vm = RunningVm::start(
            &host.kvm,
            &host.pv,
            &spec,
            validated.effective,
            &serial,
            &irq,
            &VcpuThreads {
                generation,
                events: &events,
                filters: &filters,
            },
        )
        .map_err(|e| internal(&e))?;
        self.vm = Some(vm);
        self.state = VmState::Running;
        Ok(())
    }

    /// Boots the created VM (the command line's path, and `vm.boot`).
    pub fn boot(&mut self) -> Result<(), ApiError> {
        self.require("vm.boot", &[VmState::Created, VmState::Shutdown])?;
        self.start()
    }

    /// Stops the VM, if one runs, and folds pending PV changes into the config (they apply
    /// whenever the VM is next created).
    fn stop_vm(&mut self) {
        if let Some(vm) = self.vm.take() {
            match &self.serial {
                Some((_, irq)) => vm.stop(irq),
                None => log::error!("a running VM without a serial port"),
            }
        }
        if let Some(config) = &mut self.config {
            let next = hooks::reboot(&config.cpus.kvm_pv, self.pending.take());
            config.cpus.kvm_pv = next;
        }
        if self.state.has_vcpus() {
            self.state = VmState::Shutdown;
        }
    }

    /// Recreates the VM with the pending PV changes applied.
    fn reboot(&mut self) -> Result<(), ApiError> {
        self.stop_vm();
        self.start()
    }

    /// Runs the main loop until the VMM should exit.
    pub fn run(&mut self, events: &Receiver<Event>) -> Result<Exit, ControlError> {
        loop {
            let event = events.recv().map_err(|_| ControlError::Disconnected)?;
            let current = self.vm.as_ref().map(RunningVm::generation);
            match event {
                Event::Vcpu(VcpuEvent::Request(g, request)) if Some(g) == current => {
                    match request {
                        VmRequest::PowerOff => {
                            log::info!("the guest powered off");
                            self.stop_vm();
                            return Ok(Exit::PowerOff);
                        }
                        VmRequest::Reset => {
                            log::info!("the guest rebooted: recreating the VM");
                            self.reboot().map_err(|e| ControlError::Boot {
                                what: "recreating the VM after the guest's reset",
                                source: Box::new(e),
                            })?;
                        }
                    }
                }
                Event::Vcpu(VcpuEvent::Fatal(g, message)) if Some(g) == current => {
                    self.stop_vm();
                    return Err(ControlError::Fatal(message));
                }
                Event::Vcpu(VcpuEvent::Request(g, _) | VcpuEvent::Fatal(g, _)) => {
                    log::debug!("ignoring an event of the torn-down VM generation {g}");
                }
                Event::Signal(sig) => {
                    log::warn!("stopped by signal {sig}");
                    self.stop_vm();
                    return Ok(Exit::Signal(sig));
                }
                Event::Api(message) => {
                    let exit = matches!(message.request, ApiRequest::VmmShutdown);
                    let answer = self.handle(message.request);
                    // The client may have gone away; the VM is what matters.
                    let _ = message.reply.send(answer);
                    if exit {
                        return Ok(Exit::VmmShutdown);
                    }
                }
            }
        }
    }

    /// Carries out one API request.
    pub fn handle(&mut self, request: ApiRequest) -> ApiResponse {
        match request {
            ApiRequest::VmmPing => Ok(Some(json!({
                "build_version": env!("CARGO_PKG_VERSION"),
                "version": env!("CARGO_PKG_VERSION"),
                "pid": std::process::id(),
                "features": ["kvm_pv"],
            }))),
            ApiRequest::VmmShutdown => {
                self.stop_vm();
                Ok(None)
            }
            ApiRequest::VmCreate(config) => self.create(*config).map(|_| None),
            ApiRequest::VmBoot => self.boot().map(|_| None),
            ApiRequest::VmInfo => self.info().map(Some),
            ApiRequest::VmCounters => {
                self.require("vm.counters", &[VmState::Running, VmState::Paused])?;
                let vm = self.running("vm.counters")?;
                serde_json::to_value(vm.counters())
                    .map(Some)
                    .map_err(|e| internal(&e))
            }
            ApiRequest::VmPause => {
                self.require("vm.pause", &[VmState::Running])?;
                self.running("vm.pause")?
                    .pause()
                    .map_err(|e| internal(&e))?;
                self.state = VmState::Paused;
                Ok(None)
            }
            ApiRequest::VmResume => {
                self.require("vm.resume", &[VmState::Paused])?;
                self.running("vm.resume")?.resume();
                self.state = VmState::Running;
                Ok(None)
            }
            ApiRequest::VmReboot => {
                self.require("vm.reboot", &[VmState::Running, VmState::Paused])?;
                self.reboot().map(|_| None)
            }
            ApiRequest::VmShutdown => {
                self.require("vm.shutdown", &[VmState::Running, VmState::Paused])?;
                self.stop_vm();
                Ok(None)
            }
            ApiRequest::VmDelete => {
                self.stop_vm();
                self.config = None;
                self.pending = None;
                self.serial = None;
                *lock(&self.stdin) = None;
                self.state = VmState::Created;
                Ok(None)
            }
            ApiRequest::VmPv(patch) => self.change_pv(&patch).map(Some),
        }
    }

    fn running(&self, what: &str) -> Result<&RunningVm, ApiError> {
        self.vm
            .as_ref()
            .ok_or_else(|| ApiError::Conflict(format!("{what}: the VM is not running")))
    }

    /// `vm.pv`: plans the patch with the glue's rules, applies what applies now to the live
    /// VM, and only then records the new requested and pending state.
    fn change_pv(&mut self, patch: &PvPatch) -> Result<serde_json::Value, ApiError> {
        let requested = self.config("vm.pv")?.cpus.kvm_pv;
        let state = self.state;
        let host = self.host()?.pv.clone();
        let plan = plan_change(
            &requested,
            self.pending.as_ref(),
            patch,
            state,
            &host,
            VMM_BACKS,
        )
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if let Some(vm) = &mut self.vm {
            vm.apply_now(&plan.applied_now).map_err(|e| internal(&e))?;
        }
        if let Some(config) = &mut self.config {
            config.cpus.kvm_pv = plan.new_requested;
        }
        self.pending = plan.pending;
        serde_json::to_value(&plan).map_err(|e| internal(&e))
    }

    fn info(&mut self) -> Result<serde_json::Value, ApiError> {
        let config = self.config("vm.info")?.clone();
        let host = self.host()?.pv.clone();
        let pv = PvInfo::new(
            config.cpus.kvm_pv,
            self.vm.as_ref().map(|vm| vm.effective()),
            self.pending,
            &host,
            VMM_BACKS,
        );
        // Where the vCPUs' CPUID has the Hyper-V and KVM blocks, or (without a VM) where
        // the placement rule will put them.
        let (cpuid_blocks, hyperv) = match &self.vm {
            Some(vm) => (vm.cpuid_blocks(), vm.hyperv()),
            None => (
                CpuidBlocks::planned(
                    config.cpus.kvm_hyperv,
                    pv.effective.as_ref().is_some_and(|e| e.leaves),
                ),
                None,
            ),
        };
        // Each vCPU's steal-time record as its MSR locates it (the numbers are vm.counters';
        // what an MSR value that locates no record is, and why, is said here).
        let steal_time = self.vm.as_ref().map(|vm| vm.steal_times());
        Ok(json!({
            "config": config,
            "state": self.state,
            "memory_actual_size": config.memory.size,
            "pv": pv,
            "steal_time": steal_time,
            "cpuid_blocks": cpuid_blocks,
            "hyperv": hyperv,
            "host": host,
        }))
    }
}

/// Copies stdin into the serial port's receive FIFO of the current VM until stdin closes.
pub fn feed_stdin(target: &StdinTarget) {
    let mut stdin = std::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let mut pending = &buf[..n];
                while !pending.is_empty() {
                    let Some(serial) = lock(target).clone() else {
                        break;
                    };
                    let taken = lock(&serial).enqueue_raw_bytes(pending).unwrap_or(0);
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

/// What [`RunningVm::start`] needs from a config.
pub fn spec_of(config: &VmConfig) -> VmSpec {
    let cpus = &config.cpus;
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
    VmSpec {
        kernel: config.payload.kernel.clone(),
        initramfs: config.payload.initramfs.clone(),
        cmdline: config.payload.cmdline.clone(),
        memory: config.memory.size,
        thp: config.memory.thp,
        vcpus: cpus.boot_vcpus,
        topology,
        phys_bits: cpus.max_phys_bits,
        kvm_hyperv: cpus.kvm_hyperv,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vm_config::PayloadConfig;

    fn vmm() -> (Vmm, Receiver<Event>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let filters = Filters::new(seccomp::SeccompMode::Off).expect("no filters");
        (Vmm::new(tx, filters), rx)
    }

    fn status(answer: ApiResponse) -> u16 {
        match answer {
            Ok(Some(_)) => 200,
            Ok(None) => 204,
            Err(e) => e.status(),
        }
    }

    #[test]
    fn without_a_vm_every_vm_request_conflicts() {
        let (mut vmm, _rx) = vmm();
        for request in [
            ApiRequest::VmBoot,
            ApiRequest::VmInfo,
            ApiRequest::VmCounters,
            ApiRequest::VmPause,
            ApiRequest::VmResume,
            ApiRequest::VmReboot,
            ApiRequest::VmShutdown,
            ApiRequest::VmPv(PvPatch {
                dedicated: Some(true),
                ..PvPatch::default()
            }),
        ] {
            let name = format!("{request:?}");
            let answer = vmm.handle(request);
            // Cloud Hypervisor's code for a VM not created.
            assert_eq!(status(answer.clone()), 404, "{name}");
            let message = answer.expect_err("not created").to_string();
            assert!(message.contains("no VM is created"), "{name}: {message}");
        }
        // Deleting nothing is fine, pinging always is.
        assert_eq!(status(vmm.handle(ApiRequest::VmDelete)), 204);
        assert_eq!(status(vmm.handle(ApiRequest::VmmPing)), 200);
    }

    #[test]
    fn create_refuses_a_config_that_cannot_boot_before_touching_kvm() {
        let (mut vmm, _rx) = vmm();
        let config = VmConfig {
            cpus: Default::default(),
            memory: Default::default(),
            payload: PayloadConfig {
                kernel: "/nonexistent/kernel".into(),
                initramfs: None,
                cmdline: String::new(),
            },
            serial: Default::default(),
            cloud_hypervisor: Default::default(),
        };
        let err = vmm
            .handle(ApiRequest::VmCreate(Box::new(config)))
            .expect_err("no kernel");
        assert_eq!(err.status(), 400);
        assert!(err.to_string().contains("payload.kernel"), "{err}");
        assert!(vmm.config.is_none());
    }

    #[test]
    fn spec_follows_the_config() {
        let config: VmConfig = serde_json::from_str(
            r#"{"cpus":{"boot_vcpus":4,"max_vcpus":4,"max_phys_bits":40},"memory":{"size":1073741824},"payload":{"kernel":"/k","cmdline":"quiet"}}"#,
        )
        .expect("parses");
        let spec = spec_of(&config);
        assert_eq!(spec.vcpus, 4);
        assert_eq!(spec.memory, 1 << 30);
        assert_eq!(spec.phys_bits, 40);
        assert_eq!(spec.cmdline, "quiet");
        assert_eq!(spec.topology.cores_per_package, 4);
        assert!(!spec.kvm_hyperv);
        let mut config = config;
        config.cpus.kvm_hyperv = true;
        assert!(spec_of(&config).kvm_hyperv);
    }
}
