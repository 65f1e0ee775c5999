//! Loading the guest kernel with linux-loader and entering it. Two formats:
//!
//! - a bzImage, entered through the 64-bit boot protocol (Documentation/arch/x86/boot.rst):
//!   boot parameters with the E820 map and the command line in the zero page,
//!   identity-mapped page tables, a flat GDT, and the boot vCPU in long mode at the
//!   kernel's 64-bit entry with RSI pointing at the zero page;
//! - an ELF image with a PVH entry note, entered through the PVH boot ABI ([`pvh`]).
//!
//! [`check_kernel`] tells them apart (and refuses anything else) before a VM exists.

use std::fs::File;
use std::path::Path;

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::boot_params;
use linux_loader::loader::{load_cmdline, BzImage, Cmdline, KernelLoader};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

use crate::layout::{self, E820Entry};

pub mod pvh;

/// Offset of the 64-bit entry point (`startup_64`) from the protected-mode kernel's start.
const STARTUP_64_OFFSET: u64 = 0x200;
/// `boot_params.hdr.type_of_loader`: "undefined" boot loader.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// `boot_params.hdr.loadflags` bit: the kernel was loaded high (at 1 MiB).
const LOADED_HIGH: u8 = 0x1;
/// The bzImage header magic "HdrS".
const HDR_MAGIC: u32 = 0x5372_6448;
/// The boot-sector signature at offset 0x1fe.
const BOOT_FLAG: u16 = 0xaa55;

/// Errors of loading and entering the kernel.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file cannot be opened.
    #[error("cannot open kernel {path}")]
    OpenKernel {
        /// The path given.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file has no bzImage header.
    #[error("{path} is not a bzImage kernel (no boot-sector signature 0xaa55 and `HdrS` header)")]
    NotBzImage {
        /// The path given.
        path: String,
    },
    /// The file is neither a bzImage nor an ELF image.
    #[error("{path} is not a kernel pv-vmm can boot: neither a bzImage (boot-sector signature 0xaa55 and `HdrS` header) nor an ELF image with a PVH entry note")]
    UnknownFormat {
        /// The path given.
        path: String,
    },
    /// The ELF image cannot be booted through PVH.
    #[error("{path}: {reason}")]
    BadElf {
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The kernel could not be loaded.
    #[error("{path} is not a kernel this VMM can load: {source}")]
    LoadKernel {
        /// The path given.
        path: String,
        /// linux-loader's error.
        #[source]
        source: linux_loader::loader::Error,
    },
    /// The initramfs cannot be read.
    #[error("cannot read initramfs {path}")]
    ReadInitramfs {
        /// The path given.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The initramfs does not fit below the kernel's limit.
    #[error("initramfs of {size} bytes does not fit in guest RAM below {limit:#x}")]
    InitramfsTooBig {
        /// Its size.
        size: usize,
        /// The highest address the kernel accepts.
        limit: u64,
    },
    /// The command line is invalid or too long.
    #[error("kernel command line: {0}")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    /// Writing a boot structure into guest memory failed.
    #[error("writing {what} into guest memory")]
    Memory {
        /// Which structure.
        what: &'static str,
        /// The memory error.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// Writing the command line into guest memory failed.
    #[error("writing the kernel command line: {0}")]
    LoadCmdline(#[source] linux_loader::loader::Error),
    /// Writing the boot parameters (zero page or PVH start info) failed.
    #[error("writing the boot parameters: {0}")]
    BootParams(#[source] linux_loader::configurator::Error),
    /// The memory map has more entries than the boot structures hold.
    #[error("the memory map has {entries} entries, more than the {max} the boot structures hold")]
    MemoryMapTooLong {
        /// Entries in the map.
        entries: usize,
        /// What fits.
        max: usize,
    },
    /// A vCPU register ioctl failed.
    #[error("setting the boot vCPU's {what}")]
    Vcpu {
        /// Which state.
        what: &'static str,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// What the boot vCPU needs once the kernel is in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryPoint {
    /// A bzImage: long mode at this 64-bit entry, RSI at the zero page.
    Linux64 {
        /// The 64-bit entry address.
        rip: u64,
    },
    /// A PVH ELF: 32-bit protected mode at this entry, EBX at the start info.
    Pvh {
        /// The `XEN_ELFNOTE_PHYS32_ENTRY` address.
        entry: u32,
    },
}

/// The kernel formats pv-vmm boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// A bzImage (64-bit boot protocol).
    BzImage,
    /// An ELF image with a PVH entry note at this address.
    PvhElf {
        /// The 32-bit entry point the note gives.
        entry: u32,
    },
}

/// The ELF magic.
const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];

/// Finds out which format `path` is, before a VM is created, so a wrong file gets one
/// clear error naming it instead of a failure deep in the boot: a bzImage, or an ELF image
/// whose PVH note is checked here (an ELF without one is refused).
pub fn check_kernel(path: &Path) -> Result<KernelFormat, BootError> {
    use std::io::{Read, Seek, SeekFrom};
    let name = path.display().to_string();
    let open_err = |source| BootError::OpenKernel {
        path: name.clone(),
        source,
    };
    let mut file = File::open(path).map_err(open_err)?;
    let mut header = [0u8; 0x208];
    let mut read = 0;
    file.seek(SeekFrom::Start(0)).map_err(open_err)?;
    // A short file (or a pipe) may need several reads; stop at the end.
    while read < header.len() {
        let n = file.read(&mut header[read..]).map_err(open_err)?;
        if n == 0 {
            break;
        }
        read += n;
    }
    if read >= ELF_MAGIC.len() && header[..ELF_MAGIC.len()] == ELF_MAGIC {
        let entry = pvh::find_entry(&mut file).map_err(|reason| BootError::BadElf {
            path: name.clone(),
            reason,
        })?;
        return Ok(KernelFormat::PvhElf { entry });
    }
    let flag = u16::from_le_bytes([header[0x1fe], header[0x1ff]]);
    let magic = u32::from_le_bytes([header[0x202], header[0x203], header[0x204], header[0x205]]);
    if read < header.len() || flag != BOOT_FLAG || magic != HDR_MAGIC {
        return Err(BootError::UnknownFormat { path: name });
    }
    Ok(KernelFormat::BzImage)
}

/// Loads the kernel in whichever format it is, the initramfs and the command line, and
/// writes the boot parameters of its protocol.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    kernel: &Path,
    initramfs: Option<&Path>,
    cmdline: &str,
    e820: &[E820Entry],
    rsdp: GuestAddress,
) -> Result<EntryPoint, BootError> {
    match check_kernel(kernel)? {
        KernelFormat::BzImage => load_linux(mem, kernel, initramfs, cmdline, e820, rsdp),
        KernelFormat::PvhElf { .. } => pvh::load(mem, kernel, initramfs, cmdline, e820, rsdp),
    }
}

/// Loads the kernel file at `kernel` with linux-loader's loader `L`, above 1 MiB.
pub(crate) fn load_image<L: KernelLoader>(
    mem: &GuestMemoryMmap,
    kernel: &Path,
) -> Result<linux_loader::loader::KernelLoaderResult, BootError> {
    let path = || kernel.display().to_string();
    let mut file = File::open(kernel).map_err(|source| BootError::OpenKernel {
        path: path(),
        source,
    })?;
    L::load(mem, None, &mut file, Some(layout::HIGH_RAM_START)).map_err(|source| {
        BootError::LoadKernel {
            path: path(),
            source,
        }
    })
}

/// Loads a bzImage, the initramfs and the command line, and writes the zero page.
pub fn load_linux(
    mem: &GuestMemoryMmap,
    kernel: &Path,
    initramfs: Option<&Path>,
    cmdline: &str,
    e820: &[E820Entry],
    rsdp: GuestAddress,
) -> Result<EntryPoint, BootError> {
    let name = kernel.display().to_string();
    let loaded = load_image::<BzImage>(mem, kernel)?;
    let mut params = boot_params::default();
    if let Some(header) = loaded.setup_header {
        params.hdr = header;
    }
    if params.hdr.header != HDR_MAGIC || params.hdr.boot_flag != BOOT_FLAG {
        return Err(BootError::NotBzImage { path: name });
    }
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.loadflags |= LOADED_HIGH;

    params.hdr.cmd_line_ptr = layout::CMDLINE_START.raw_value() as u32;
    params.hdr.cmdline_size = write_cmdline(mem, cmdline)?;

    if let Some(path) = initramfs {
        let (addr, size) =
            load_initramfs(mem, path, params.hdr.initrd_addr_max, loaded.kernel_end)?;
        params.hdr.ramdisk_image = addr.raw_value() as u32;
        params.hdr.ramdisk_size = size as u32;
    }

    for (i, (addr, size, kind)) in e820.iter().enumerate().take(params.e820_table.len()) {
        params.e820_table[i].addr = *addr;
        params.e820_table[i].size = *size;
        params.e820_table[i].r#type = *kind;
        params.e820_entries = (i + 1) as u8;
    }
    params.acpi_rsdp_addr = rsdp.raw_value();

    let boot = BootParams::new::<boot_params>(&params, layout::ZERO_PAGE_START);
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(&boot, mem)
        .map_err(BootError::BootParams)?;
    Ok(EntryPoint::Linux64 {
        rip: loaded.kernel_load.raw_value() + STARTUP_64_OFFSET,
    })
}

/// Writes the NUL-terminated command line at [`layout::CMDLINE_START`]; returns its length
/// without the NUL.
pub(crate) fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<u32, BootError> {
    let mut line = Cmdline::new(layout::CMDLINE_MAX_SIZE).map_err(BootError::Cmdline)?;
    line.insert_str(cmdline).map_err(BootError::Cmdline)?;
    load_cmdline(mem, layout::CMDLINE_START, &line).map_err(BootError::LoadCmdline)?;
    Ok(line
        .as_cstring()
        .map(|c| c.as_bytes().len() as u32)
        .unwrap_or(0))
}

/// Places the initramfs at the highest page-aligned address below the kernel's limit and
/// the end of low RAM, above the kernel.
pub(crate) fn load_initramfs(
    mem: &GuestMemoryMmap,
    path: &Path,
    addr_max: u32,
    kernel_end: u64,
) -> Result<(GuestAddress, usize), BootError> {
    let name = path.display().to_string();
    let data =
        std::fs::read(path).map_err(|source| BootError::ReadInitramfs { path: name, source })?;
    let low_end = mem
        .iter()
        .map(|r| r.start_addr().raw_value() + r.len())
        .filter(|end| *end <= layout::MMIO_HOLE_START)
        .max()
        .unwrap_or(0);
    let limit = low_end.min(u64::from(addr_max) + 1);
    let too_big = || BootError::InitramfsTooBig {
        size: data.len(),
        limit,
    };
    let start = limit
        .checked_sub(data.len() as u64)
        .map(|a| a & !0xfff)
        .filter(|a| *a >= kernel_end)
        .ok_or_else(too_big)?;
    mem.write_slice(&data, GuestAddress(start))
        .map_err(|source| BootError::Memory {
            what: "the initramfs",
            source,
        })?;
    Ok((GuestAddress(start), data.len()))
}

/// Writes what the boot vCPU's entry state refers to: for a bzImage the identity map of
/// the first 4 GiB (2 MiB pages) and the 64-bit GDT; for PVH the 32-bit flat GDT (paging
/// is off). Both get an empty IDT.
pub fn write_boot_tables(mem: &GuestMemoryMmap, entry: &EntryPoint) -> Result<(), BootError> {
    let err = |what| move |source| BootError::Memory { what, source };
    let gdt: &[u64] = match entry {
        EntryPoint::Linux64 { .. } => {
            write_identity_map(mem)?;
            &GDT
        }
        EntryPoint::Pvh { .. } => &pvh::GDT,
    };
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_obj(*entry, layout::GDT_START.unchecked_add(i as u64 * 8))
            .map_err(err("the GDT"))?;
    }
    mem.write_obj(0u64, layout::IDT_START)
        .map_err(err("the IDT"))?;
    Ok(())
}

fn write_identity_map(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    let err = |what| move |source| BootError::Memory { what, source };
    mem.write_obj(
        PDPTE_FLAGS | layout::PDPTE_START.raw_value(),
        layout::PML4_START,
    )
    .map_err(err("the PML4"))?;
    for dir in 0..4u64 {
        let pde_page = layout::PDE_START.raw_value() + dir * 0x1000;
        mem.write_obj(
            PDPTE_FLAGS | pde_page,
            layout::PDPTE_START.unchecked_add(dir * 8),
        )
        .map_err(err("the PDPT"))?;
        for i in 0..512u64 {
            let phys = (dir << 30) | (i << 21);
            mem.write_obj(phys | PDE_2M_FLAGS, GuestAddress(pde_page + i * 8))
                .map_err(err("a page directory"))?;
        }
    }
    Ok(())
}

/// Present + writable.
const PDPTE_FLAGS: u64 = 0x3;
/// Present + writable + 2 MiB page.
const PDE_2M_FLAGS: u64 = 0x83;

/// Null, 64-bit code, data, TSS descriptors (flat).
const GDT: [u64; 4] = [
    0,
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

/// A segment descriptor from its flags (access byte in bits 7:0, G/D/L/AVL in 15:12), base
/// and 20-bit limit.
pub(crate) const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The segment register KVM loads for descriptor `entry` at GDT `index` (base, limit scaled
/// by the granularity bit, and the attribute bits).
pub(crate) fn segment(index: u16, entry: u64) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    kvm_segment {
        base,
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// Puts the boot vCPU at `entry` in the state its protocol defines.
pub fn setup_boot_vcpu(vcpu: &VcpuFd, entry: EntryPoint) -> Result<(), BootError> {
    let err = |what| move |source| BootError::Vcpu { what, source };
    let sregs: kvm_sregs = vcpu.get_sregs().map_err(err("special registers"))?;
    let (sregs, regs) = match entry {
        EntryPoint::Linux64 { rip } => (long_mode_sregs(sregs), long_mode_regs(rip)),
        EntryPoint::Pvh { entry } => (pvh::sregs(sregs), pvh::regs(entry)),
    };
    vcpu.set_sregs(&sregs).map_err(err("special registers"))?;
    vcpu.set_regs(&regs).map_err(err("registers"))?;
    Ok(())
}

/// Points GDTR at `gdt` (written at [`layout::GDT_START`]) and IDTR at the empty IDT, and
/// loads the flat segments both entry protocols use from it: code from entry 1, data from
/// entry 2, the TSS from entry 3.
pub(crate) fn flat_segments(sregs: &mut kvm_sregs, gdt: &[u64; 4]) {
    sregs.gdt.base = layout::GDT_START.raw_value();
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = layout::IDT_START.raw_value();
    sregs.idt.limit = 7;
    let data = segment(2, gdt[2]);
    sregs.cs = segment(1, gdt[1]);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(3, gdt[3]);
}

/// Long mode with paging on through the identity map, flat 64-bit segments.
fn long_mode_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    flat_segments(&mut sregs, &GDT);
    sregs.cr3 = layout::PML4_START.raw_value();
    sregs.cr4 |= X86_CR4_PAE;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_PG | X86_CR0_ET;
    sregs.efer |= EFER_LME | EFER_LMA;
    sregs
}

/// At the 64-bit entry with the zero page in RSI.
fn long_mode_regs(rip: u64) -> kvm_regs {
    kvm_regs {
        rflags: 0x2,
        rip,
        rsp: layout::BOOT_STACK_POINTER,
        rbp: layout::BOOT_STACK_POINTER,
        rsi: layout::ZERO_PAGE_START.raw_value(),
        ..Default::default()
    }
}

/// MSRs every vCPU starts with (fast strings on, syscall MSRs clear).
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_MISC_ENABLE_FAST_STRING: u64 = 1;

/// Architectural state every vCPU gets: FPU control words, MISC_ENABLE, LAPIC LINT pins.
pub fn setup_common_vcpu(vcpu: &VcpuFd) -> Result<(), BootError> {
    let err = |what| move |source| BootError::Vcpu { what, source };
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(err("FPU"))?;
    let msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_IA32_MISC_ENABLE,
        data: MSR_IA32_MISC_ENABLE_FAST_STRING,
        ..Default::default()
    }])
    .map_err(|_| BootError::Vcpu {
        what: "MSRs",
        source: kvm_ioctls::Error::new(libc::E2BIG),
    })?;
    vcpu.set_msrs(&msrs).map_err(err("MSRs"))?;
    // LINT0 as ExtINT (the legacy PIC's output) and LINT1 as NMI, as firmware leaves them.
    let mut lapic = vcpu.get_lapic().map_err(err("local APIC"))?;
    set_lvt(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
    set_lvt(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic).map_err(err("local APIC"))?;
    Ok(())
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn set_lvt(regs: &mut [libc::c_char; 1024], offset: usize, mode: u32) {
    let mut raw = [0u8; 4];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = regs[offset + i] as u8;
    }
    let value = (u32::from_le_bytes(raw) & !0x700) | (mode << 8);
    for (i, b) in value.to_le_bytes().iter().enumerate() {
        regs[offset + i] = *b as libc::c_char;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_decode_to_flat_segments() {
        let code = segment(1, GDT[1]);
        assert_eq!(
            (code.selector, code.type_, code.l, code.present, code.s),
            (8, 0xb, 1, 1, 1)
        );
        let data = segment(2, GDT[2]);
        assert_eq!(
            (data.selector, data.type_, data.db, data.g),
            (16, 0x3, 1, 1)
        );
        assert_eq!(GDT[1], 0x00af_9b00_0000_ffff);
    }

    #[test]
    fn lvt_mode_bits() {
        let mut regs = [0 as libc::c_char; 1024];
        regs[APIC_LVT0] = 0x30;
        regs[APIC_LVT0 + 2] = 1; // masked
        set_lvt(&mut regs, APIC_LVT0, APIC_MODE_EXTINT);
        assert_eq!(regs[APIC_LVT0] as u8, 0x30);
        assert_eq!(regs[APIC_LVT0 + 1] as u8, 0x7);
        assert_eq!(regs[APIC_LVT0 + 2] as u8, 1);
    }

    #[test]
    fn segments_decode_base_limit_and_granularity() {
        let code = segment(1, GDT[1]);
        assert_eq!(
            (code.base, code.limit, code.g, code.db),
            (0, 0xffff_ffff, 1, 0)
        );
        // A byte-granular descriptor keeps its limit; the base is reassembled.
        let tss = segment(5, gdt_entry(0x008b, 0x1234_5678, 0x67));
        assert_eq!(
            (tss.base, tss.limit, tss.g, tss.selector, tss.type_, tss.s),
            (0x1234_5678, 0x67, 0, 40, 0xb, 0)
        );
    }

    #[test]
    fn long_mode_entry_state() {
        let sregs = long_mode_sregs(kvm_sregs::default());
        assert_eq!(sregs.cr3, layout::PML4_START.raw_value());
        assert_eq!(
            sregs.cr0 & (X86_CR0_PE | X86_CR0_PG),
            X86_CR0_PE | X86_CR0_PG
        );
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!((sregs.cs.l, sregs.cs.db), (1, 0));
        let regs = long_mode_regs(0x100_0200);
        assert_eq!(regs.rip, 0x100_0200);
        assert_eq!(regs.rsi, layout::ZERO_PAGE_START.raw_value());
    }

    #[test]
    fn unknown_files_are_refused_naming_them() {
        let file = vmm_sys_util::tempfile::TempFile::new().expect("temp");
        let name = file.as_path().display().to_string();
        for content in [&b"not a kernel"[..], b"", &[0u8; 0x1000]] {
            std::fs::write(file.as_path(), content).expect("write");
            let err = check_kernel(file.as_path()).expect_err("not a kernel");
            let text = err.to_string();
            assert!(text.starts_with(&name), "{text}");
            assert!(
                text.contains("neither a bzImage") && text.contains("PVH entry note"),
                "{text}"
            );
        }
        let err = check_kernel(Path::new("/nonexistent/kernel")).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("cannot open kernel /nonexistent/kernel"),
            "{err}"
        );
    }

    #[test]
    fn bzimage_header_is_recognised() {
        let file = vmm_sys_util::tempfile::TempFile::new().expect("temp");
        let mut image = vec![0u8; 0x1000];
        image[0x1fe..0x200].copy_from_slice(&BOOT_FLAG.to_le_bytes());
        image[0x202..0x206].copy_from_slice(&HDR_MAGIC.to_le_bytes());
        std::fs::write(file.as_path(), &image).expect("write");
        assert_eq!(
            check_kernel(file.as_path()).ok(),
            Some(KernelFormat::BzImage)
        );
        // Truncated just before the end of the header: refused.
        std::fs::write(file.as_path(), &image[..0x207]).expect("write");
        assert!(check_kernel(file.as_path()).is_err());
    }
}
