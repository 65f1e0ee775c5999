//! Guest RAM: anonymous private mappings aligned to 2 MiB, with transparent huge pages
//! asked for (`madvise(MADV_HUGEPAGE)`), or with `memory.thp` off refused
//! (`MADV_NOHUGEPAGE`: on a host whose `transparent_hugepage` is `always`, not asking
//! would still give huge pages).
//!
//! KVM maps a guest page with a 2 MiB page-table entry only where the host backs it with a
//! huge page *and* the guest-physical and host-virtual addresses agree modulo 2 MiB, so the
//! mapping is placed on a 2 MiB boundary (every region of [`crate::layout::ram_regions`]
//! starts on one). `mmap` alone gives 4 KiB alignment, and with the usual
//! `transparent_hugepage=madvise` the kernel gives huge pages only where asked. QEMU and
//! Cloud Hypervisor (`thp=on`, its default) ask too.

use std::ptr::NonNull;

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap};

/// The huge-page size KVM maps guest RAM with on x86 (a PMD).
pub const HUGE_PAGE: usize = 2 << 20;

const PROT: libc::c_int = libc::PROT_READ | libc::PROT_WRITE;
const FLAGS: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

/// Why guest RAM could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RamError {
    /// `mmap` refused.
    #[error("mapping {bytes} bytes of guest RAM")]
    Map {
        /// The mapping's size, alignment slack included.
        bytes: usize,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// vm-memory refused the regions (overlap, overflow).
    #[error("describing guest RAM to vm-memory: {0}")]
    Regions(String),
}

/// One mapping of guest RAM, unmapped when dropped.
#[derive(Debug)]
struct Mapping {
    addr: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Mapping` is an address range this process owns; nothing in it is tied to the
// thread that created it.
unsafe impl Send for Mapping {}
// SAFETY: `Mapping` gives no access to the memory through `&self` beyond its address.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes (a multiple of 4 KiB) at an address that is a multiple of
    /// [`HUGE_PAGE`]: maps `len + HUGE_PAGE` bytes, then unmaps the slack on both sides.
    fn aligned(len: usize) -> Result<Self, RamError> {
        let bytes = len.checked_add(HUGE_PAGE).ok_or_else(|| RamError::Map {
            bytes: len,
            source: std::io::Error::from_raw_os_error(libc::ENOMEM),
        })?;
        // SAFETY: a new anonymous mapping at an address of the kernel's choice; it touches
        // no existing memory. The result is checked before use.
        let raw = unsafe { libc::mmap(std::ptr::null_mut(), bytes, PROT, FLAGS, -1, 0) };
        if raw == libc::MAP_FAILED {
            return Err(RamError::Map {
                bytes,
                source: std::io::Error::last_os_error(),
            });
        }
        let start = raw as usize;
        let head = start.next_multiple_of(HUGE_PAGE) - start;
        let tail = bytes - head - len;
        // SAFETY: both ranges lie inside the mapping just made, which nothing else knows
        // of yet; `head` and `tail` are multiples of the page size (the mapping is
        // page-aligned, and so are `len` and HUGE_PAGE). munmap of an owned range cannot
        // fail but for bad arguments, which these are not; its result is not needed.
        unsafe {
            if head > 0 {
                libc::munmap(raw, head);
            }
            if tail > 0 {
                libc::munmap(raw.cast::<u8>().add(head + len).cast(), tail);
            }
        }
        let addr =
            NonNull::new(raw.cast::<u8>().wrapping_add(head)).ok_or_else(|| RamError::Map {
                bytes,
                source: std::io::Error::from_raw_os_error(libc::EFAULT),
            })?;
        Ok(Self { addr, len })
    }

    /// Asks for transparent huge pages (`MADV_HUGEPAGE`) or against them
    /// (`MADV_NOHUGEPAGE`); the kernel's refusal (no THP support: EINVAL) is returned for
    /// the caller to report.
    fn advise_huge_pages(&self, huge: bool) -> std::io::Result<()> {
        let advice = if huge {
            libc::MADV_HUGEPAGE
        } else {
            libc::MADV_NOHUGEPAGE
        };
        // SAFETY: madvise on this process's own mapping, exactly its range; either advice
        // changes how the kernel backs it, not its contents.
        let rc = unsafe { libc::madvise(self.addr.as_ptr().cast(), self.len, advice) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is this value's own, made by `aligned`; `GuestRam` drops its
        // vm-memory view (the only other user) first.
        unsafe { libc::munmap(self.addr.as_ptr().cast(), self.len) };
    }
}

/// Guest RAM: vm-memory's view of it and the mappings behind that view. The view does not
/// own the mappings, so it must not outlive them: it is only lent out (`mem`), and it is
/// dropped before them (field order).
#[derive(Debug)]
pub struct GuestRam {
    mem: GuestMemoryMmap,
    maps: Vec<Mapping>,
}

impl GuestRam {
    /// Maps the guest-physical `ranges` (start, bytes; each start and size a multiple of
    /// 4 KiB, sorted, not overlapping), each on a 2 MiB host boundary, asking for
    /// transparent huge pages when `thp` is set and against them when not. Returns the RAM
    /// and, if the kernel refused the advice, why (the RAM works without it).
    pub fn new(
        ranges: &[(GuestAddress, usize)],
        thp: bool,
    ) -> Result<(Self, Option<std::io::Error>), RamError> {
        let mut maps = Vec::with_capacity(ranges.len());
        let mut regions = Vec::with_capacity(ranges.len());
        let mut refused = None;
        for &(start, len) in ranges {
            let map = Mapping::aligned(len)?;
            if let Err(e) = map.advise_huge_pages(thp) {
                refused.get_or_insert(e);
            }
            // SAFETY: `map` is a live private anonymous mapping of exactly `len` bytes with
            // PROT and FLAGS; `maps` keeps it alive for as long as `mem` (see the type).
            let region = unsafe {
                MmapRegionBuilder::new(len)
                    .with_raw_mmap_pointer(map.addr.as_ptr())
                    .with_mmap_prot(PROT)
                    .with_mmap_flags(FLAGS)
                    .build()
            }
            .map_err(|e| RamError::Regions(e.to_string()))?;
            maps.push(map);
            let region = GuestRegionMmap::new(region, start).ok_or_else(|| {
                RamError::Regions(format!(
                    "a region of {len} bytes at {:#x} overflows",
                    start.0
                ))
            })?;
            regions.push(region);
        }
        let mem =
            GuestMemoryMmap::from_regions(regions).map_err(|e| RamError::Regions(e.to_string()))?;
        Ok((Self { mem, maps }, refused))
    }

    /// vm-memory's view of guest RAM. Callers borrow it; a clone must not outlive `self`.
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// How many mappings back the RAM (one per region).
    pub fn mappings(&self) -> usize {
        self.maps.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn regions_are_huge_page_aligned_and_usable() {
        let ranges = [
            (GuestAddress(0), 6 << 20),
            (GuestAddress(1 << 32), (4 << 20) + 4096),
        ];
        for thp in [true, false] {
            let (ram, _refused) = GuestRam::new(&ranges, thp).expect("ram");
            assert_eq!(ram.mappings(), 2);
            for region in ram.mem().iter() {
                let host = ram
                    .mem()
                    .get_host_address(region.start_addr())
                    .expect("host address") as usize;
                assert_eq!(host % HUGE_PAGE, 0, "{host:#x}");
            }
            assert_eq!(
                ram.mem().iter().map(|r| r.len()).sum::<u64>(),
                (10 << 20) + 4096
            );
            // Every byte is reachable, at both ends of both regions.
            for at in [0, (6 << 20) - 1, 1 << 32, (1 << 32) + (4 << 20) + 4095] {
                ram.mem()
                    .write_obj(0xa5u8, GuestAddress(at))
                    .expect("write");
                assert_eq!(ram.mem().read_obj::<u8>(GuestAddress(at)).ok(), Some(0xa5));
            }
            // Nothing past the end.
            assert!(ram.mem().read_obj::<u8>(GuestAddress(6 << 20)).is_err());
        }
    }

    #[test]
    fn huge_pages_are_asked_for_where_the_kernel_has_them() {
        let (ram, refused) = GuestRam::new(&[(GuestAddress(0), 8 << 20)], true).expect("ram");
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
        // A kernel with THP takes the advice; one without says EINVAL.
        match (thp, refused) {
            (Ok(_), refused) => assert!(refused.is_none(), "{refused:?}"),
            (Err(_), Some(e)) => assert_eq!(e.raw_os_error(), Some(libc::EINVAL)),
            (Err(_), None) => panic!("madvise(MADV_HUGEPAGE) taken on a kernel without THP"),
        }
        // The advice shows in the mapping's flags (VmFlags "hg").
        let base = ram.mem().get_host_address(GuestAddress(0)).expect("host") as usize;
        if std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            let flags = vm_flags_of(base).expect("the mapping's VmFlags in /proc/self/smaps");
            assert!(flags.split_whitespace().any(|f| f == "hg"), "{flags}");
        }
        // thp off: advised against ("nh"), so that a host with THP `always` gives none.
        let (plain, _) = GuestRam::new(&[(GuestAddress(0), 8 << 20)], false).expect("ram");
        let base = plain.mem().get_host_address(GuestAddress(0)).expect("host") as usize;
        if std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            let flags = vm_flags_of(base).expect("the mapping's VmFlags in /proc/self/smaps");
            let flags: Vec<&str> = flags.split_whitespace().collect();
            assert!(flags.contains(&"nh") && !flags.contains(&"hg"), "{flags:?}");
        }
    }

    /// The `VmFlags` of this process's mapping that starts at `base`, from /proc/self/smaps.
    fn vm_flags_of(base: usize) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut in_map = false;
        for line in smaps.lines() {
            // A mapping's first line: "<start>-<end> <perms> ...".
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((lo, hi)) = first.split_once('-') {
                if let (Ok(lo), Ok(_)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    in_map = lo == base;
                    continue;
                }
            }
            if in_map {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return Some(flags.to_owned());
                }
            }
        }
        None
    }
}
