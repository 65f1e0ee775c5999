//! The raw PVH guests of `integration-tests/guest/hostile/` (no Linux): building them
//! ([`HostileGuests`]), parsing what they print on COM1 ([`parse_guest`]), and what real
//! KVM answers each hypercall they make ([`kvm_answer`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use pv_features::cpuid::KvmFeatures;
use pv_features::hypercall::{
    guest_return_value, Dispatcher, Hypercall, HypercallAction, KVM_EINVAL, KVM_ENOSYS,
    KVM_EOPNOTSUPP, KVM_HC_CLOCK_PAIRING, KVM_HC_MAP_GPA_RANGE,
};

use crate::{run_script, script, LabError};

/// `KVM_HC_VAPIC_POLL_IRQ`: answered 0 by KVM whatever the features.
pub const KVM_HC_VAPIC_POLL_IRQ: u64 = 1;
/// `KVM_EFAULT` (EFAULT): a hypercall's guest address could not be written.
pub const KVM_EFAULT: i64 = 14;

/// The guest images, built (or found in the cache) by `scripts/build-hostile-guests`.
#[derive(Debug, Clone)]
pub struct HostileGuests {
    /// Prints the start info and halts.
    pub idle: PathBuf,
    /// Attacks the vCPU loop, reports, then halts (see `hostile.S`).
    pub hostile: PathBuf,
}

impl HostileGuests {
    /// Runs `scripts/build-hostile-guests` and takes the paths it prints.
    pub fn build() -> Result<Self, LabError> {
        let program = script("build-hostile-guests");
        let out = run_script(&program, &[])?;
        let path = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .map(PathBuf::from)
                .ok_or_else(|| LabError::Script {
                    program: program.clone(),
                    status: Some(0),
                    stderr: format!("no {name}= line in its output:\n{out}"),
                })
        };
        Ok(Self {
            idle: path("idle")?,
            hostile: path("hostile")?,
        })
    }
}

/// One hypercall the guest made and the value it got in RAX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HypercallResult {
    /// The call (number, a0..a3, mode), as the guest loaded the registers.
    pub call: Hypercall,
    /// RAX after the call (32 bits in 32-bit mode).
    pub ret: u64,
}

/// One access pair to `MSR_KVM_STEAL_TIME`: a write, then a read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsrAccess {
    /// The value written.
    pub value: u64,
    /// The write raised #GP.
    pub gp_write: bool,
    /// The read raised #GP.
    pub gp_read: bool,
    /// What the read returned (0 after a #GP).
    pub readback: u64,
}

/// The steal-time record right after the valid write, as the guest read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StealRecord {
    /// The record's version (even once KVM finished writing it).
    pub version: u32,
    /// Steal nanoseconds.
    pub steal: u64,
    /// The preempted byte.
    pub preempted: u8,
}

/// PVH module 0 as the guest found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Module {
    /// Its guest-physical address.
    pub paddr: u64,
    /// Its size.
    pub size: u64,
    /// Its first 8 bytes.
    pub first: [u8; 8],
}

/// The guest's last line: its own counts, taken before that line was printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// `io_out`, `io_in`, `mmio`, `hypercalls`, `faults`.
    pub counts: BTreeMap<String, u64>,
    /// The bytes of the line itself, newline included (each one more port write).
    pub line_bytes: u64,
}

impl Done {
    /// A count, 0 when absent.
    pub fn count(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }

    /// The port accesses the guest made one instruction at a time (string I/O excluded),
    /// including the bytes of this line: the I/O exits pv-vmm must have seen, apart from
    /// the string instructions.
    pub fn single_io(&self) -> u64 {
        self.count("io_out") + self.count("io_in") + self.line_bytes
    }
}

/// Everything a guest of `integration-tests/guest/hostile/` printed.
#[derive(Debug, Clone, Default)]
pub struct GuestReport {
    /// `@@PVH ...@@`: magic, version, flags, modules, rsdp, memmap_entries.
    pub start_info: BTreeMap<String, u64>,
    /// The command line found at `cmdline_paddr`.
    pub cmdline: Option<String>,
    /// The memory map: address, size, type.
    pub memmap: Vec<(u64, u64, u32)>,
    /// Module 0, when there is one.
    pub module: Option<Module>,
    /// The end of the highest RAM entry.
    pub ram_end: Option<u64>,
    /// The CPU vendor string and the hypercall instruction chosen for it.
    pub vendor: Option<(String, String)>,
    /// `@@KVM-CPUID ...@@`: max, signature, features, hints (as printed).
    pub kvm_cpuid: BTreeMap<String, String>,
    /// The steal-time MSR accesses, in order.
    pub msrs: Vec<MsrAccess>,
    /// The record after the valid steal-time write.
    pub record: Option<StealRecord>,
    /// Every hypercall, in order.
    pub hypercalls: Vec<HypercallResult>,
    /// `@@PORTS ...@@`.
    pub ports: BTreeMap<String, u64>,
    /// `@@STRING-OUT ...@@`: the line the guest wrote to COM1 with one `rep outsb`.
    pub string_out: Option<String>,
    /// `@@MMIO ...@@` (32-bit phase).
    pub mmio: BTreeMap<String, u64>,
    /// `@@MMIO64 ...@@` (64-bit phase; its counts include the 32-bit phase's).
    pub mmio64: BTreeMap<String, u64>,
    /// The guest reached long mode.
    pub long_mode: bool,
    /// The last line of the hostile guest.
    pub done: Option<Done>,
    /// `@@HOSTILE-UNEXPECTED-FAULT ...@@`: a fault the guest did not provoke.
    pub unexpected_fault: Option<String>,
    /// The idle guest finished its report.
    pub idle_up: bool,
    /// The guest PV-kicked the never-started vCPU (`kick_ap` on its command line).
    pub kicked_ap: bool,
    /// `@@...` lines that did not parse.
    pub malformed: Vec<String>,
}

/// `key=hexvalue` words, every one of them well formed.
fn fields(text: &str) -> Option<BTreeMap<String, u64>> {
    text.split_whitespace()
        .map(|word| {
            let (key, value) = word.split_once('=')?;
            Some((key.to_owned(), u64::from_str_radix(value, 16).ok()?))
        })
        .collect()
}

fn hex(word: &str) -> Option<u64> {
    u64::from_str_radix(word, 16).ok()
}

/// Parses the guest's serial output, line by line (without the `L2| ` prefix).
pub fn parse_guest<S: AsRef<str>>(lines: &[S]) -> GuestReport {
    let mut report = GuestReport::default();
    for raw in lines {
        let line = raw.as_ref().trim_end_matches('\r');
        let Some(inner) = line.strip_prefix("@@").and_then(|l| l.strip_suffix("@@")) else {
            continue;
        };
        let (tag, rest) = inner.split_once(' ').unwrap_or((inner, ""));
        let ok = match tag {
            "PVH" => fields(rest).map(|f| report.start_info = f).is_some(),
            "PVH-CMDLINE" => {
                report.cmdline = Some(rest.to_owned());
                true
            }
            "PVH-MEM" => {
                let w: Vec<&str> = rest.split_whitespace().collect();
                match (
                    w.first().and_then(|v| hex(v)),
                    w.get(1).and_then(|v| hex(v)),
                    w.get(2).and_then(|v| hex(v)),
                ) {
                    (Some(a), Some(s), Some(t)) => {
                        report.memmap.push((a, s, t as u32));
                        true
                    }
                    _ => false,
                }
            }
            "PVH-MODULE" => parse_module(rest)
                .map(|m| report.module = Some(m))
                .is_some(),
            "PVH-RAM-END" => hex(rest).map(|v| report.ram_end = Some(v)).is_some(),
            "VENDOR" => rest
                .split_once(" insn=")
                .map(|(v, i)| report.vendor = Some((v.to_owned(), i.to_owned())))
                .is_some(),
            "KVM-CPUID" => {
                report.kvm_cpuid = rest
                    .split_whitespace()
                    .filter_map(|w| w.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                !report.kvm_cpuid.is_empty()
            }
            "MSR" => fields(rest)
                .and_then(|f| {
                    Some(MsrAccess {
                        value: *f.get("value")?,
                        gp_write: *f.get("gp_write")? != 0,
                        gp_read: *f.get("gp_read")? != 0,
                        readback: *f.get("readback")?,
                    })
                })
                .map(|m| report.msrs.push(m))
                .is_some(),
            "ST-RECORD" => fields(rest)
                .and_then(|f| {
                    Some(StealRecord {
                        version: *f.get("version")? as u32,
                        steal: *f.get("steal")?,
                        preempted: (*f.get("preempted")? & 0xff) as u8,
                    })
                })
                .map(|r| report.record = Some(r))
                .is_some(),
            "HC" => parse_hypercall(rest)
                .map(|h| report.hypercalls.push(h))
                .is_some(),
            "PORTS" => fields(rest).map(|f| report.ports = f).is_some(),
            "STRING-OUT" => {
                report.string_out = Some(rest.to_owned());
                true
            }
            "MMIO" => fields(rest).map(|f| report.mmio = f).is_some(),
            "MMIO64" => fields(rest).map(|f| report.mmio64 = f).is_some(),
            "LONG-MODE" => {
                report.long_mode = true;
                true
            }
            "HOSTILE-DONE" => fields(rest)
                .map(|counts| {
                    report.done = Some(Done {
                        counts,
                        line_bytes: line.len() as u64 + 1,
                    })
                })
                .is_some(),
            "HOSTILE-UNEXPECTED-FAULT" => {
                report.unexpected_fault = Some(rest.to_owned());
                true
            }
            "IDLE-UP" => {
                report.idle_up = true;
                true
            }
            "KICK-AP" => {
                report.kicked_ap = true;
                true
            }
            "HOSTILE-BEGIN" | "IDLE-BEGIN" => true,
            _ => false,
        };
        if !ok {
            report.malformed.push(line.to_owned());
        }
    }
    report
}

fn parse_module(rest: &str) -> Option<Module> {
    let mut paddr = None;
    let mut size = None;
    let mut first = None;
    for (key, value) in rest.split_whitespace().filter_map(|w| w.split_once('=')) {
        match key {
            "paddr" => paddr = hex(value),
            "size" => size = hex(value),
            // Two dwords printed as numbers: their bytes in little-endian order.
            "first" if value.len() == 16 => {
                let lo = u32::from_str_radix(&value[..8], 16).ok()?;
                let hi = u32::from_str_radix(&value[8..], 16).ok()?;
                let mut bytes = [0u8; 8];
                bytes[..4].copy_from_slice(&lo.to_le_bytes());
                bytes[4..].copy_from_slice(&hi.to_le_bytes());
                first = Some(bytes);
            }
            _ => return None,
        }
    }
    Some(Module {
        paddr: paddr?,
        size: size?,
        first: first?,
    })
}

fn parse_hypercall(rest: &str) -> Option<HypercallResult> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    let [mode, nr, a0, a1, a2, a3, ret] = words.as_slice() else {
        return None;
    };
    let long_mode = match *mode {
        "32" => false,
        "64" => true,
        _ => return None,
    };
    Some(HypercallResult {
        call: Hypercall {
            nr: hex(nr)?,
            args: [hex(a0)?, hex(a1)?, hex(a2)?, hex(a3)?, 0, 0],
            long_mode,
        },
        ret: hex(ret)?,
    })
}

/// What a hypercall's RAX must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Fixed by the ABI and the configuration.
    Exact(u64),
    /// One of these, depending on the host; the reason says on what.
    OneOf {
        /// The values KVM may give.
        values: Vec<u64>,
        /// What decides among them.
        why: &'static str,
    },
}

impl Answer {
    /// Whether `ret` is an answer KVM may give.
    pub fn accepts(&self, ret: u64) -> bool {
        match self {
            Answer::Exact(v) => *v == ret,
            Answer::OneOf { values, .. } => values.contains(&ret),
        }
    }
}

/// What KVM answers `call` made at CPL 0 by a vCPU whose CPUID advertises `features` (PV
/// CPUID enforcement `enforce`), with KVM's local APIC in the kernel, no
/// `KVM_CAP_EXIT_HYPERCALL` (pv-vmm enables none) and the software-enabled local APICs
/// numbered 0..=`max_enabled_apic`. Source: `kvm_emulate_hypercall()` (Linux 6.1
/// `arch/x86/kvm/x86.c`) and `kvm_pv_send_ipi()` (`lapic.c`); the PV hypercalls follow
/// `pv_features::hypercall::Dispatcher`, whose model of them this checks against KVM.
pub fn kvm_answer(
    call: &Hypercall,
    features: KvmFeatures,
    enforce: bool,
    max_enabled_apic: u32,
) -> Answer {
    let truncate = |v: u64| {
        if call.long_mode {
            v
        } else {
            v & u64::from(u32::MAX)
        }
    };
    let ret = |v: i64| guest_return_value(v, call.long_mode);
    match truncate(call.nr) {
        KVM_HC_VAPIC_POLL_IRQ => Answer::Exact(ret(0)),
        // KVM checks the clock type first; then the host clock, then the write.
        KVM_HC_CLOCK_PAIRING if truncate(call.args[1]) != 0 => {
            Answer::Exact(ret(-KVM_EOPNOTSUPP))
        }
        KVM_HC_CLOCK_PAIRING => Answer::OneOf {
            values: vec![ret(0), ret(-KVM_EOPNOTSUPP), ret(-KVM_EFAULT)],
            why: "0 with a TSC-based host clock and a writable address, -KVM_EOPNOTSUPP with another host clock, -KVM_EFAULT when the address is not guest RAM",
        },
        // Only with KVM_CAP_EXIT_HYPERCALL, and then it goes to user space.
        KVM_HC_MAP_GPA_RANGE => Answer::Exact(ret(-KVM_ENOSYS)),
        _ => {
            let dispatcher = Dispatcher {
                features,
                enforce,
                max_apic_id: max_enabled_apic,
                phys_bits: 52,
            };
            Answer::Exact(ret(match dispatcher.dispatch(call) {
                Ok(HypercallAction::SendIpi(ipi)) => dispatcher.send_ipi_count(&ipi),
                Ok(_) => 0,
                Err(e) => e.code(),
            }))
        }
    }
}

/// `-KVM_EINVAL` as the guest sees it in `mode`.
pub fn einval(long_mode: bool) -> u64 {
    guest_return_value(-KVM_EINVAL, long_mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_PV: KvmFeatures = KvmFeatures::PV_SEND_IPI
        .union(KvmFeatures::PV_UNHALT)
        .union(KvmFeatures::PV_SCHED_YIELD)
        .union(KvmFeatures::STEAL_TIME);

    fn report(text: &str) -> GuestReport {
        let lines: Vec<&str> = text.lines().collect();
        parse_guest(&lines)
    }

    /// Lines the hostile guest printed in the lab (AMD, KVM of Linux 6.1).
    const SAMPLE: &str = "\
@@HOSTILE-BEGIN@@
@@PVH magic=336ec578 version=00000001 flags=00000000 modules=00000001 rsdp=000e0000 memmap_entries=00000002@@
@@PVH-CMDLINE pv-hostile case=hostile@@
@@PVH-MEM 0000000000000000 000000000009fc00 00000001@@
@@PVH-MEM 0000000000100000 000000000ff00000 00000001@@
@@PVH-MODULE paddr=0ffff000 size=00000014 first=54534f482d454c49@@
@@PVH-RAM-END 0000000010000000@@
@@VENDOR AuthenticAMD insn=vmmcall@@
@@KVM-CPUID max=40000001 signature=KVMKVMKVM features=01007efb hints=00000000@@
@@MSR value=0000000000106181 gp_write=00000000 gp_read=00000000 readback=0000000000106181@@
@@ST-RECORD version=000000e4 steal=000000000061bba0 preempted=00000000@@
@@MSR value=0000000000106183 gp_write=00000001 gp_read=00000000 readback=0000000000106181@@
@@HC 32 0000000a 00000000 00000001 ffffffe0 000000f0 00000001@@
@@HC 64 000000000000000a 0000000000000001 0000000000000000 0000000100000000 00000000000000f0 0000000000000001@@
@@HC 64 0000000000000009 00000000001061c0 0000000000000000 0000000000000000 0000000000000000 ffffffffffffffa1@@
@@STRING-OUT one rep outsb, every byte@@
@@PORTS swept=000007da not_ones=00000000 first_bad=00000000 wide_string_not_ones=00000000 cmos_string=80808080 string_ops=00000004@@
@@MMIO accesses=00000012 not_ones=00000000@@
@@LONG-MODE@@
@@MMIO64 accesses=00000014 not_ones=00000000@@
@@KICK-AP@@
@@HC 64 0000000000000005 0000000000000000 0000000000000001 0000000000000000 0000000000000000 0000000000000000@@
@@HOSTILE-DONE io_out=000079a8 io_in=000007de mmio=00000014 hypercalls=00000134 faults=00000005@@";

    #[test]
    fn the_hostile_report_parses() {
        let r = report(SAMPLE);
        assert!(r.malformed.is_empty(), "{:?}", r.malformed);
        assert_eq!(r.start_info.get("magic"), Some(&0x336e_c578));
        assert_eq!(r.cmdline.as_deref(), Some("pv-hostile case=hostile"));
        assert_eq!(r.memmap, vec![(0, 0x9fc00, 1), (0x10_0000, 0xff0_0000, 1)]);
        let m = r.module.expect("module");
        assert_eq!((m.paddr, m.size), (0xfff_f000, 0x14));
        assert_eq!(&m.first, b"HOSTILE-");
        assert_eq!(r.ram_end, Some(0x1000_0000));
        assert_eq!(
            r.vendor,
            Some(("AuthenticAMD".to_owned(), "vmmcall".to_owned()))
        );
        assert_eq!(
            r.kvm_cpuid.get("features").map(String::as_str),
            Some("01007efb")
        );
        assert_eq!(r.msrs.len(), 2);
        assert!(r.msrs[1].gp_write && !r.msrs[1].gp_read);
        assert_eq!(r.msrs[1].readback, 0x10_6181);
        assert_eq!(r.record.map(|s| s.version), Some(0xe4));
        assert_eq!(r.hypercalls.len(), 4);
        assert!(r.kicked_ap);
        assert!(!r.hypercalls[0].call.long_mode && r.hypercalls[1].call.long_mode);
        assert_eq!(r.hypercalls[1].call.args[2], 1 << 32);
        assert_eq!(r.ports.get("swept"), Some(&0x7da));
        assert_eq!(r.ports.get("cmos_string"), Some(&0x8080_8080));
        assert_eq!(r.string_out.as_deref(), Some("one rep outsb, every byte"));
        assert!(r.long_mode);
        let done = r.done.expect("done");
        assert_eq!(done.count("hypercalls"), 0x134);
        // 0x79a8 + 0x7de port accesses, and the 98 bytes of the DONE line.
        assert_eq!(done.line_bytes, 98);
        assert_eq!(done.single_io(), 0x79a8 + 0x7de + 98);
    }

    #[test]
    fn broken_lines_are_collected_not_guessed() {
        let r = report(
            "@@HC 32 0000000a zz 0 0 0 0@@\n@@MSR value=1 gp_write=0@@\n@@PVH-MEM 1 2@@\n@@NEW-THING x@@\nplain text\n@@PVH-MODULE paddr=1 size=2 first=12@@",
        );
        assert_eq!(r.malformed.len(), 5, "{:?}", r.malformed);
        assert!(r.hypercalls.is_empty() && r.msrs.is_empty() && r.memmap.is_empty());
        assert!(r.module.is_none());
    }

    fn call(nr: u64, args: [u64; 4], long_mode: bool) -> Hypercall {
        Hypercall {
            nr,
            args: [args[0], args[1], args[2], args[3], 0, 0],
            long_mode,
        }
    }

    #[test]
    fn kvm_answers_the_lab_saw_are_predicted() {
        let r = report(SAMPLE);
        for h in &r.hypercalls {
            let answer = kvm_answer(&h.call, ALL_PV, true, 0);
            assert!(answer.accepts(h.ret), "{h:?}: {answer:?}");
        }
    }

    #[test]
    fn kvm_answers_follow_mode_features_and_number() {
        let enosys32 = 0xffff_fc18;
        let enosys64 = 0xffff_ffff_ffff_fc18;
        // Unknown numbers, and numbers whose upper half only 64-bit mode sees.
        assert_eq!(
            kvm_answer(&call(0, [0; 4], false), ALL_PV, true, 0),
            Answer::Exact(enosys32)
        );
        assert_eq!(
            kvm_answer(&call(0x1_0000_0001, [0; 4], true), ALL_PV, true, 0),
            Answer::Exact(enosys64)
        );
        assert_eq!(
            kvm_answer(&call(0x1_0000_0001, [0; 4], false), ALL_PV, true, 0),
            Answer::Exact(0),
            "32-bit mode drops the upper half: VAPIC_POLL_IRQ"
        );
        // SEND_IPI: counted for the enabled APIC, refused when not advertised.
        let ipi = call(10, [u64::MAX, u64::MAX, 0, 0xf0], true);
        assert_eq!(kvm_answer(&ipi, ALL_PV, true, 0), Answer::Exact(1));
        assert_eq!(kvm_answer(&ipi, ALL_PV, true, 1), Answer::Exact(2));
        assert_eq!(
            kvm_answer(&ipi, KvmFeatures::empty(), true, 0),
            Answer::Exact(enosys64)
        );
        assert_eq!(
            kvm_answer(&ipi, KvmFeatures::empty(), false, 0),
            Answer::Exact(1),
            "without enforcement KVM serves it anyway"
        );
        assert_eq!(
            kvm_answer(&call(10, [1, 0, 0, 0x8f0], false), ALL_PV, true, 0),
            Answer::Exact(einval(false))
        );
        // MAP_GPA_RANGE never reaches anything without KVM_CAP_EXIT_HYPERCALL.
        assert_eq!(
            kvm_answer(&call(12, [0, 1, 0, 0], true), ALL_PV, false, 0),
            Answer::Exact(enosys64)
        );
        // CLOCK_PAIRING: a clock type other than 0 is always unsupported.
        assert_eq!(
            kvm_answer(&call(9, [0, 1, 0, 0], true), ALL_PV, true, 0),
            Answer::Exact(0xffff_ffff_ffff_ffa1)
        );
        let any = kvm_answer(&call(9, [0x1000, 0, 0, 0], false), ALL_PV, true, 0);
        assert!(any.accepts(0) && any.accepts(0xffff_ffa1) && any.accepts(0xffff_fff2));
        assert!(!any.accepts(0xffff_fc18));
        // KICK_CPU and SCHED_YIELD: 0 when advertised.
        assert_eq!(
            kvm_answer(&call(5, [0, 7, 0, 0], true), ALL_PV, true, 0),
            Answer::Exact(0)
        );
        assert_eq!(
            kvm_answer(
                &call(11, [0, 0, 0, 0], false),
                KvmFeatures::STEAL_TIME,
                true,
                0
            ),
            Answer::Exact(enosys32)
        );
    }
}
