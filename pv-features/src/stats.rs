//! KVM binary statistics of a VM or a vCPU (`KVM_GET_STATS_FD`), read by name.
//!
//! Source: the kernel's `Documentation/virt/kvm/api.rst`, section 4.133 (KVM_GET_STATS_FD).
//! The file holds a header, an id string, a descriptor block (one `kvm_stats_desc` plus a
//! `name_size`-byte name each) and a data block of u64 values. Descriptors do not change
//! while the file is open, so they are parsed once and only the data block is re-read.

use std::fs::File;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use kvm_bindings::{
    kvm_stats_desc, kvm_stats_header, KVM_STATS_BASE_MASK, KVM_STATS_BASE_POW10,
    KVM_STATS_BASE_POW2, KVM_STATS_TYPE_MASK, KVM_STATS_UNIT_MASK,
};
use serde::{Deserialize, Serialize};
use vmm_sys_util::ioctl::ioctl;

/// All exits of a vCPU.
pub const EXITS: &str = "exits";
/// HLT exits (stays 0 with HLT exits disabled).
pub const HALT_EXITS: &str = "halt_exits";
/// Halts that ended while polling.
pub const HALT_SUCCESSFUL_POLL: &str = "halt_successful_poll";
/// Wake-ups from halt.
pub const HALT_WAKEUP: &str = "halt_wakeup";
/// Hypercalls (PV send-IPI, sched yield, kick).
pub const HYPERCALLS: &str = "hypercalls";
/// Directed yields attempted (PV sched yield, PV spinlock kicks).
pub const DIRECTED_YIELD_ATTEMPTED: &str = "directed_yield_attempted";
/// Directed yields that succeeded.
pub const DIRECTED_YIELD_SUCCESSFUL: &str = "directed_yield_successful";
/// TLB flushes KVM did for the vCPU, including PV flush requests.
pub const TLB_FLUSH: &str = "tlb_flush";
/// Remote TLB flushes of the VM (a VM statistic).
pub const REMOTE_TLB_FLUSH: &str = "remote_tlb_flush";
/// The vCPU was preempted at an instruction boundary.
pub const PREEMPTION_REPORTED: &str = "preemption_reported";
/// The vCPU was preempted elsewhere.
pub const PREEMPTION_OTHER: &str = "preemption_other";
/// Exits for external interrupts.
pub const IRQ_EXITS: &str = "irq_exits";
/// Port I/O exits.
pub const IO_EXITS: &str = "io_exits";

/// Upper bounds that keep a malformed stats file from making us allocate without limit.
const MAX_DESCRIPTORS: usize = 4096;
const MAX_NAME_SIZE: usize = 4096;
const MAX_VALUES_PER_STAT: usize = 4096;

use crate::ioctls::KVM_GET_STATS_FD;

/// Errors of opening and reading a stats file.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// `KVM_GET_STATS_FD` failed.
    #[error("KVM_GET_STATS_FD")]
    Open(#[source] std::io::Error),
    /// Reading the file failed.
    #[error("reading the KVM stats file ({what})")]
    Read {
        /// Which part was being read.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file's layout is not what the KVM ABI describes.
    #[error("malformed KVM stats file: {0}")]
    Malformed(String),
}

/// How a statistic accumulates (`KVM_STATS_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatKind {
    /// Only grows.
    Cumulative,
    /// A current value.
    Instant,
    /// The highest value seen.
    Peak,
    /// A histogram with linear buckets.
    LinearHistogram,
    /// A histogram with log2 buckets.
    LogHistogram,
    /// A type this crate does not know.
    Unknown(u32),
}

/// The base of a statistic's unit exponent (`KVM_STATS_BASE_*`): the value is in
/// `unit * base^exponent` (api.rst, `KVM_GET_STATS_FD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatBase {
    /// Powers of ten (times, cycles: exponent -9 is nanoseconds).
    Pow10,
    /// Powers of two (sizes: exponent 10 is KiB).
    Pow2,
    /// A base this crate does not know (the raw flag bits).
    Unknown(u32),
}

/// One statistic's descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatDesc {
    /// The name (`exits`, `halt_exits`, ...).
    pub name: String,
    /// How it accumulates.
    pub kind: StatKind,
    /// The `KVM_STATS_UNIT_*` bits of the flags.
    pub unit: u32,
    /// The base [`StatDesc::exponent`] applies to.
    pub base: StatBase,
    /// The exponent of the unit, in [`StatDesc::base`].
    pub exponent: i16,
    /// The number of u64 values (1, or the buckets of a histogram).
    pub size: u16,
    /// Byte offset of the first value within the data block.
    pub offset: u32,
    /// The width of each bucket of a [`StatKind::LinearHistogram`], in the statistic's
    /// unit; 0 for every other kind.
    pub bucket_size: u32,
}

/// An open stats file of a VM or a vCPU.
#[derive(Debug)]
pub struct StatsFd {
    file: File,
    id: String,
    descs: Vec<StatDesc>,
    data_offset: u64,
    data_len: usize,
}

/// Values read from a stats file at one moment, looked up by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// `(name, values)` in the file's order.
    pub values: Vec<(String, Vec<u64>)>,
}

impl Stats {
    /// The first value of the statistic `name` (the value, for non-histograms).
    pub fn get(&self, name: &str) -> Option<u64> {
        self.get_all(name).and_then(|v| v.first().copied())
    }

    /// All values of the statistic `name`.
    pub fn get_all(&self, name: &str) -> Option<&[u64]> {
        self.values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The sum of `name` over several files (the VM total of a per-vCPU statistic);
    /// `None` when no file has it.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Stats>, name: &str) -> Option<u64> {
        all.into_iter()
            .filter_map(|s| s.get(name))
            .fold(None, |acc, v| Some(acc.unwrap_or(0u64).saturating_add(v)))
    }
}

impl StatsFd {
    /// Opens the stats file of a VM or vCPU file descriptor (`KVM_GET_STATS_FD`; needs
    /// `KVM_CAP_BINARY_STATS_FD`, Linux 5.14).
    pub fn open(fd: &impl AsRawFd) -> Result<Self, StatsError> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new file descriptor or -1;
        // `fd` is a valid open descriptor for as long as the borrow lasts.
        let ret = unsafe { ioctl(fd, KVM_GET_STATS_FD) };
        if ret < 0 {
            return Err(StatsError::Open(std::io::Error::last_os_error()));
        }
        // SAFETY: `ret` is a new descriptor that KVM just handed to us and nothing else owns.
        let file = unsafe { File::from_raw_fd(ret) };
        Self::from_file(file)
    }

    /// Parses the header and descriptors of a stats file (also used with synthetic files
    /// in tests). Every offset and size is bounds-checked.
    pub fn from_file(file: File) -> Result<Self, StatsError> {
        let mut raw = [0u8; size_of::<kvm_stats_header>()];
        file.read_exact_at(&mut raw, 0)
            .map_err(|source| StatsError::Read {
                what: "header",
                source,
            })?;
        let word = |i: usize| u32::from_ne_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
        let (name_size, num_desc) = (word(4) as usize, word(8) as usize);
        let (id_offset, desc_offset, data_offset) = (word(12), word(16), word(20));
        if name_size == 0 || name_size > MAX_NAME_SIZE {
            return Err(StatsError::Malformed(format!("name size {name_size}")));
        }
        if num_desc > MAX_DESCRIPTORS {
            return Err(StatsError::Malformed(format!("{num_desc} descriptors")));
        }
        let mut id = vec![0u8; name_size];
        file.read_exact_at(&mut id, u64::from(id_offset))
            .map_err(|source| StatsError::Read { what: "id", source })?;
        let id = c_string(&id)?;

        let desc_size = size_of::<kvm_stats_desc>() + name_size;
        let mut block = vec![0u8; desc_size * num_desc];
        file.read_exact_at(&mut block, u64::from(desc_offset))
            .map_err(|source| StatsError::Read {
                what: "descriptors",
                source,
            })?;
        let mut descs = Vec::with_capacity(num_desc);
        let mut data_len = 0usize;
        for chunk in block.chunks_exact(desc_size) {
            let desc = parse_desc(chunk)?;
            let end = desc.offset as usize + usize::from(desc.size) * size_of::<u64>();
            data_len = data_len.max(end);
            descs.push(desc);
        }
        log::debug!("stats file `{id}`: {} statistics", descs.len());
        Ok(Self {
            file,
            id,
            descs,
            data_offset: u64::from(data_offset),
            data_len,
        })
    }

    /// The VM's or vCPU's id string (e.g. `kvm-1234/vcpu-0`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The statistics the file offers.
    pub fn descriptors(&self) -> &[StatDesc] {
        &self.descs
    }

    /// Reads every value now.
    pub fn read(&self) -> Result<Stats, StatsError> {
        let mut data = vec![0u8; self.data_len];
        self.file
            .read_exact_at(&mut data, self.data_offset)
            .map_err(|source| StatsError::Read {
                what: "data",
                source,
            })?;
        let values = self
            .descs
            .iter()
            .map(|d| {
                let start = d.offset as usize;
                let end = start + usize::from(d.size) * size_of::<u64>();
                let values = data[start..end]
                    .chunks_exact(size_of::<u64>())
                    .map(|b| u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                    .collect();
                (d.name.clone(), values)
            })
            .collect();
        Ok(Stats { values })
    }

    /// Reads one statistic's (first) value now; `None` if the file has no such statistic.
    pub fn read_one(&self, name: &str) -> Result<Option<u64>, StatsError> {
        let Some(desc) = self.descs.iter().find(|d| d.name == name) else {
            return Ok(None);
        };
        let mut raw = [0u8; size_of::<u64>()];
        self.file
            .read_exact_at(&mut raw, self.data_offset + u64::from(desc.offset))
            .map_err(|source| StatsError::Read {
                what: "data",
                source,
            })?;
        Ok(Some(u64::from_ne_bytes(raw)))
    }
}

fn parse_desc(chunk: &[u8]) -> Result<StatDesc, StatsError> {
    let u32_at =
        |i: usize| u32::from_ne_bytes([chunk[i], chunk[i + 1], chunk[i + 2], chunk[i + 3]]);
    let flags = u32_at(0);
    let exponent = i16::from_ne_bytes([chunk[4], chunk[5]]);
    let size = u16::from_ne_bytes([chunk[6], chunk[7]]);
    let offset = u32_at(8);
    let bucket_size = u32_at(12);
    let name = c_string(&chunk[size_of::<kvm_stats_desc>()..])?;
    if usize::from(size) > MAX_VALUES_PER_STAT || offset % 8 != 0 {
        return Err(StatsError::Malformed(format!(
            "statistic `{name}`: size {size}, offset {offset}"
        )));
    }
    let kind = match flags & KVM_STATS_TYPE_MASK {
        0 => StatKind::Cumulative,
        1 => StatKind::Instant,
        2 => StatKind::Peak,
        3 => StatKind::LinearHistogram,
        4 => StatKind::LogHistogram,
        other => StatKind::Unknown(other),
    };
    let base = match flags & KVM_STATS_BASE_MASK {
        KVM_STATS_BASE_POW10 => StatBase::Pow10,
        KVM_STATS_BASE_POW2 => StatBase::Pow2,
        other => StatBase::Unknown(other),
    };
    Ok(StatDesc {
        name,
        kind,
        unit: flags & KVM_STATS_UNIT_MASK,
        base,
        exponent,
        size,
        offset,
        bucket_size,
    })
}

/// A NUL-terminated name from a fixed-size field.
fn c_string(bytes: &[u8]) -> Result<String, StatsError> {
    let end = bytes
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| StatsError::Malformed("name without NUL terminator".to_owned()))?;
    String::from_utf8(bytes[..end].to_vec())
        .map_err(|_| StatsError::Malformed("name is not UTF-8".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const NAME_SIZE: usize = 48;

    /// Builds a stats file in KVM's layout from `(name, flags, values)`.
    fn synth(stats: &[(&str, u32, &[u64])]) -> Vec<u8> {
        let header_size = size_of::<kvm_stats_header>();
        let desc_size = size_of::<kvm_stats_desc>() + NAME_SIZE;
        let id_offset = header_size;
        let desc_offset = id_offset + NAME_SIZE;
        let data_offset = desc_offset + desc_size * stats.len();
        let mut out = Vec::new();
        for word in [
            0u32,
            NAME_SIZE as u32,
            stats.len() as u32,
            id_offset as u32,
            desc_offset as u32,
            data_offset as u32,
        ] {
            out.extend_from_slice(&word.to_ne_bytes());
        }
        let name_field = |s: &str, out: &mut Vec<u8>| {
            let mut field = [0u8; NAME_SIZE];
            field[..s.len()].copy_from_slice(s.as_bytes());
            out.extend_from_slice(&field);
        };
        name_field("kvm-1/vcpu-0", &mut out);
        let mut offset = 0u32;
        for (name, flags, values) in stats {
            out.extend_from_slice(&flags.to_ne_bytes());
            out.extend_from_slice(&0i16.to_ne_bytes());
            out.extend_from_slice(&(values.len() as u16).to_ne_bytes());
            out.extend_from_slice(&offset.to_ne_bytes());
            out.extend_from_slice(&0u32.to_ne_bytes());
            name_field(name, &mut out);
            offset += 8 * values.len() as u32;
        }
        for (_, _, values) in stats {
            for v in *values {
                out.extend_from_slice(&v.to_ne_bytes());
            }
        }
        out
    }

    fn file_with(bytes: &[u8]) -> File {
        let fd = vmm_sys_util::tempfile::TempFile::new().expect("temp file");
        let mut file = fd.into_file();
        file.write_all(bytes).expect("write");
        file
    }

    #[test]
    fn reads_values_by_name() {
        let bytes = synth(&[
            (EXITS, 0, &[117_700]),
            (HALT_EXITS, 0, &[838]),
            ("halt_poll_success_hist", 4, &[1, 2, 3, 4]),
            (HYPERCALLS, 0, &[466]),
        ]);
        let stats_fd = StatsFd::from_file(file_with(&bytes)).expect("parses");
        assert_eq!(stats_fd.id(), "kvm-1/vcpu-0");
        assert_eq!(stats_fd.descriptors().len(), 4);
        assert_eq!(stats_fd.descriptors()[2].kind, StatKind::LogHistogram);
        let stats = stats_fd.read().expect("reads");
        assert_eq!(stats.get(EXITS), Some(117_700));
        assert_eq!(stats.get(HYPERCALLS), Some(466));
        assert_eq!(
            stats.get_all("halt_poll_success_hist"),
            Some(&[1, 2, 3, 4][..])
        );
        assert_eq!(stats.get("no_such_stat"), None);
        assert_eq!(stats_fd.read_one(HALT_EXITS).expect("reads"), Some(838));
        assert_eq!(stats_fd.read_one("nope").expect("reads"), None);
        assert_eq!(Stats::sum([&stats, &stats], HALT_EXITS), Some(1676));
        assert_eq!(Stats::sum([&stats], "nope"), None);
    }

    #[test]
    fn descriptors_carry_base_exponent_and_bucket_size() {
        let mut bytes = synth(&[
            ("halt_poll_fail_ns", KVM_STATS_BASE_POW10 | 0x30, &[5]),
            ("halt_wait_hist", KVM_STATS_BASE_POW2 | 3, &[1, 2]),
            ("odd", 0x700, &[0]),
        ]);
        // The first descriptor follows the 24-byte header and the 48-byte id: exponent at
        // +4 (-9: nanoseconds), bucket_size at +12.
        bytes[72 + 4..72 + 6].copy_from_slice(&(-9i16).to_ne_bytes());
        let second = 72 + size_of::<kvm_stats_desc>() + NAME_SIZE;
        bytes[second + 12..second + 16].copy_from_slice(&250u32.to_ne_bytes());
        let stats_fd = StatsFd::from_file(file_with(&bytes)).expect("parses");
        let d = stats_fd.descriptors();
        assert_eq!(
            (d[0].base, d[0].exponent, d[0].bucket_size),
            (StatBase::Pow10, -9, 0)
        );
        assert_eq!(
            (d[1].base, d[1].kind, d[1].bucket_size),
            (StatBase::Pow2, StatKind::LinearHistogram, 250)
        );
        assert_eq!(d[2].base, StatBase::Unknown(0x700));
    }

    #[test]
    fn rejects_truncated_files() {
        let bytes = synth(&[(EXITS, 0, &[1]), (HALT_EXITS, 0, &[2])]);
        for len in [0, 10, 24, 80, bytes.len() - 9] {
            let result = StatsFd::from_file(file_with(&bytes[..len])).and_then(|s| s.read());
            assert!(result.is_err(), "length {len} accepted");
        }
    }

    #[test]
    fn rejects_malformed_headers() {
        let mut bytes = synth(&[(EXITS, 0, &[1])]);
        bytes[8..12].copy_from_slice(&(1_000_000u32).to_ne_bytes());
        let err = StatsFd::from_file(file_with(&bytes)).expect_err("too many descriptors");
        assert_eq!(
            err.to_string(),
            "malformed KVM stats file: 1000000 descriptors"
        );

        let mut bytes = synth(&[(EXITS, 0, &[1])]);
        bytes[4..8].copy_from_slice(&0u32.to_ne_bytes());
        assert!(
            StatsFd::from_file(file_with(&bytes)).is_err(),
            "zero name size"
        );

        let mut bytes = synth(&[(EXITS, 0, &[1])]);
        let id_at = size_of::<kvm_stats_header>();
        bytes[id_at..id_at + NAME_SIZE].fill(b'x');
        let err = StatsFd::from_file(file_with(&bytes)).expect_err("unterminated id");
        assert!(err.to_string().contains("NUL"), "{err}");
    }

    #[test]
    fn rejects_misaligned_value_offsets() {
        let mut bytes = synth(&[(EXITS, 0, &[1])]);
        let desc_at = size_of::<kvm_stats_header>() + NAME_SIZE;
        bytes[desc_at + 8..desc_at + 12].copy_from_slice(&3u32.to_ne_bytes());
        let err = StatsFd::from_file(file_with(&bytes)).expect_err("offset 3");
        assert!(err.to_string().contains("offset 3"), "{err}");
    }
}
