//! PVH boot: Xen's direct boot ABI (`docs/misc/pvh.pandoc` in the Xen tree), which KVM VMMs
//! (Cloud Hypervisor, QEMU, Firecracker) use to start an ELF kernel without real mode or
//! the bzImage setup code.
//!
//! The image is an ELF64 file whose `XEN_ELFNOTE_PHYS32_ENTRY` note gives a 32-bit physical
//! entry point. linux-loader loads its segments and finds the note; this module writes the
//! `hvm_start_info` structure (version 1: command line, the initramfs as module 0, the
//! memory map, the ACPI RSDP) with linux-loader's PVH boot configurator, and defines the
//! entry state the ABI requires: 32-bit protected mode with paging off (CR0 = PE, CR4 = 0,
//! EFER = 0), flat 32-bit code and data segments (base 0, limit 4 GiB), a 32-bit busy TSS
//! (base 0, limit 0x67), EFLAGS with IF, TF and VM clear, and EBX holding the start info's
//! address. Everything else (stack, GDT, IDT) is the guest's to set up.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use kvm_bindings::{kvm_regs, kvm_sregs};
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::elf::{
    Elf64_Ehdr, Elf64_Nhdr, Elf64_Phdr, EI_CLASS, EI_DATA, ELFCLASS64, ELFDATA2LSB, EM_X86_64,
    PT_LOAD, PT_NOTE,
};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info, XEN_HVM_START_MAGIC_VALUE,
};
use linux_loader::loader::{Elf, PvhBootCapability};
use vm_memory::{Address, ByteValued, GuestAddress, GuestMemoryMmap};

use crate::boot::{self, gdt_entry, BootError, EntryPoint};
use crate::layout::{self, E820Entry};

/// The ELF note type of the PVH entry point (`XEN_ELFNOTE_PHYS32_ENTRY`, xen/include/public/elfnote.h).
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// The owner name of Xen's ELF notes, NUL included.
const XEN_NOTE_NAME: &[u8; 4] = b"Xen\0";
/// Notes are 4-byte aligned (name and descriptor).
const NOTE_ALIGN: u64 = 4;
/// The start info version this VMM writes (version 1 added the memory map).
pub const START_INFO_VERSION: u32 = 1;
/// The most PT_NOTE bytes looked at before a VM exists (Linux's notes are a few hundred).
const MAX_NOTE_BYTES: u64 = 1 << 20;

/// Null, 32-bit code (execute/read, accessed), 32-bit data (read/write, accessed) and a
/// 32-bit busy TSS: the flat segments the PVH ABI asks for.
pub const GDT: [u64; 4] = [
    0,
    gdt_entry(0xc09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x008b, 0, 0x67),
];

/// CR0.PE, the only CR0 bit the ABI sets.
const X86_CR0_PE: u64 = 0x1;
/// EFLAGS bit 1 is always set.
const EFLAGS_FIXED: u64 = 0x2;

/// Checks, before a VM exists, that the ELF image `file` can be booted through PVH and
/// returns the entry point of its PVH note. The error says what is wrong, in one phrase.
/// Mirrors what linux-loader's loader accepts: an ELF64 little-endian x86-64 image, the
/// entry at or above 1 MiB, and the PVH note decided by the last PT_NOTE segment. In
/// addition, loadable segments must not reach below 1 MiB, where pv-vmm's boot structures
/// and ACPI tables live.
pub fn find_entry<R: Read + Seek>(file: &mut R) -> Result<u32, String> {
    let mut ehdr = Elf64_Ehdr::default();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_exact(ehdr.as_mut_slice()))
        .map_err(|e| format!("truncated ELF header ({e})"))?;
    if ehdr.e_ident[EI_CLASS] != ELFCLASS64 {
        return Err("a 32-bit ELF image; pv-vmm boots ELF64 images (PVH)".to_owned());
    }
    if ehdr.e_ident[EI_DATA] != ELFDATA2LSB {
        return Err("a big-endian ELF image".to_owned());
    }
    if ehdr.e_machine != EM_X86_64 {
        return Err(format!(
            "an ELF image for machine {}, not x86-64 ({EM_X86_64})",
            ehdr.e_machine
        ));
    }
    if usize::from(ehdr.e_phentsize) != std::mem::size_of::<Elf64_Phdr>() {
        return Err(format!(
            "ELF program header size {} (expected {})",
            ehdr.e_phentsize,
            std::mem::size_of::<Elf64_Phdr>()
        ));
    }
    if ehdr.e_entry < layout::HIGH_RAM_START.raw_value() {
        return Err(format!(
            "ELF entry {:#x} below 1 MiB (linux-loader loads kernels at or above it)",
            ehdr.e_entry
        ));
    }
    let mut entry = None;
    for i in 0..u64::from(ehdr.e_phnum) {
        let mut phdr = Elf64_Phdr::default();
        let at = ehdr
            .e_phoff
            .checked_add(i * std::mem::size_of::<Elf64_Phdr>() as u64)
            .ok_or_else(|| format!("ELF program header {i} offset overflows"))?;
        file.seek(SeekFrom::Start(at))
            .and_then(|_| file.read_exact(phdr.as_mut_slice()))
            .map_err(|e| format!("truncated ELF program header {i} ({e})"))?;
        match phdr.p_type {
            PT_NOTE => entry = pvh_note(file, &phdr).map_err(|e| format!("PT_NOTE {i}: {e}"))?,
            PT_LOAD if phdr.p_filesz > 0 && phdr.p_paddr < layout::HIGH_RAM_START.raw_value() => {
                return Err(format!(
                    "ELF segment {i} loads at {:#x}, below 1 MiB where pv-vmm keeps its boot structures",
                    phdr.p_paddr
                ));
            }
            _ => {}
        }
    }
    entry.ok_or_else(|| {
        "an ELF image without a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): pv-vmm boots ELF \
         kernels only through PVH; give it a bzImage or a PVH-capable ELF"
            .to_owned()
    })
}

/// The PVH entry of one PT_NOTE segment, if it has one.
fn pvh_note<R: Read + Seek>(file: &mut R, phdr: &Elf64_Phdr) -> Result<Option<u32>, String> {
    let len = phdr.p_filesz.min(MAX_NOTE_BYTES);
    let mut notes = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(phdr.p_offset))
        .and_then(|_| file.read_exact(&mut notes))
        .map_err(|e| format!("truncated notes ({e})"))?;
    let header = std::mem::size_of::<Elf64_Nhdr>() as u64;
    let align = |v: u64| v.div_ceil(NOTE_ALIGN) * NOTE_ALIGN;
    let mut at = 0u64;
    while at + header <= len {
        let word = |off: u64| -> u32 {
            let i = (at + off) as usize;
            notes
                .get(i..i + 4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_le_bytes)
        };
        let (namesz, descsz, kind) = (u64::from(word(0)), u64::from(word(4)), word(8));
        let name_at = at + header;
        let desc_at = name_at + align(namesz);
        let name = notes.get(name_at as usize..(name_at + namesz) as usize);
        if kind == XEN_ELFNOTE_PHYS32_ENTRY && name == Some(&XEN_NOTE_NAME[..]) {
            if descsz < 4 {
                return Err(format!(
                    "the PVH note's descriptor has {descsz} bytes, fewer than a 32-bit address"
                ));
            }
            let desc = notes
                .get(desc_at as usize..desc_at as usize + 4)
                .and_then(|b| b.try_into().ok())
                .ok_or("the PVH note's descriptor is cut off")?;
            return Ok(Some(u32::from_le_bytes(desc)));
        }
        at = desc_at + align(descsz);
    }
    Ok(None)
}

/// Loads the ELF image, the initramfs (module 0) and the command line, and writes the start
/// info with the memory map `e820` and the RSDP address.
pub fn load(
    mem: &GuestMemoryMmap,
    kernel: &Path,
    initramfs: Option<&Path>,
    cmdline: &str,
    e820: &[E820Entry],
    rsdp: GuestAddress,
) -> Result<EntryPoint, BootError> {
    let name = kernel.display().to_string();
    let loaded = boot::load_image::<Elf>(mem, kernel)?;
    let entry = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => u32::try_from(addr.raw_value()).ok(),
        _ => None,
    }
    .ok_or_else(|| BootError::BadElf {
        path: name.clone(),
        reason: "linux-loader found no PVH entry note".to_owned(),
    })?;

    boot::write_cmdline(mem, cmdline)?;
    let module = initramfs
        .map(|path| boot::load_initramfs(mem, path, u32::MAX, loaded.kernel_end))
        .transpose()?;

    let memmap = memory_map(e820)?;
    let info = start_info(&memmap, module.is_some(), rsdp);
    let mut params = BootParams::new::<hvm_start_info>(&info, layout::PVH_INFO_START);
    params.set_sections::<hvm_memmap_table_entry>(&memmap, layout::PVH_MEMMAP_START);
    if let Some((addr, size)) = module {
        let modules = [hvm_modlist_entry {
            paddr: addr.raw_value(),
            size: size as u64,
            ..Default::default()
        }];
        params.set_modules::<hvm_modlist_entry>(&modules, layout::PVH_MODLIST_START);
    }
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
        .map_err(BootError::BootParams)?;
    log::info!("{name}: PVH entry {entry:#x}");
    Ok(EntryPoint::Pvh { entry })
}

/// The E820 map as PVH memory-map entries.
fn memory_map(e820: &[E820Entry]) -> Result<Vec<hvm_memmap_table_entry>, BootError> {
    if e820.len() > layout::PVH_MEMMAP_MAX_ENTRIES {
        return Err(BootError::MemoryMapTooLong {
            entries: e820.len(),
            max: layout::PVH_MEMMAP_MAX_ENTRIES,
        });
    }
    Ok(e820
        .iter()
        .map(|(addr, size, kind)| hvm_memmap_table_entry {
            addr: *addr,
            size: *size,
            type_: *kind,
            reserved: 0,
        })
        .collect())
}

/// The start info for `memmap`, with the initramfs as module 0 when there is one.
fn start_info(
    memmap: &[hvm_memmap_table_entry],
    module: bool,
    rsdp: GuestAddress,
) -> hvm_start_info {
    hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: START_INFO_VERSION,
        flags: 0,
        nr_modules: u32::from(module),
        modlist_paddr: if module {
            layout::PVH_MODLIST_START.raw_value()
        } else {
            0
        },
        cmdline_paddr: layout::CMDLINE_START.raw_value(),
        rsdp_paddr: rsdp.raw_value(),
        memmap_paddr: layout::PVH_MEMMAP_START.raw_value(),
        memmap_entries: memmap.len() as u32,
        reserved: 0,
    }
}

/// The special registers at the PVH entry: protected mode, paging off, flat 32-bit segments
/// from [`GDT`], the busy 32-bit TSS, CR4 and EFER clear.
pub fn sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    boot::flat_segments(&mut sregs, &GDT);
    sregs.cr0 = X86_CR0_PE;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    sregs
}

/// The general registers at the PVH entry: EIP at `entry`, EBX at the start info, EFLAGS
/// with only the fixed bit.
pub fn regs(entry: u32) -> kvm_regs {
    kvm_regs {
        rflags: EFLAGS_FIXED,
        rip: u64::from(entry),
        rbx: layout::PVH_INFO_START.raw_value(),
        ..Default::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Cursor;

    use vm_memory::{Bytes, GuestMemoryBackend};

    use super::*;

    /// Where the test image loads and enters.
    const LOAD_AT: u64 = 0x10_0000;

    /// A minimal ELF64 x86-64 image: one PT_LOAD of `code` at 1 MiB and, with `note`, a
    /// PT_NOTE holding an unrelated note and then the PVH entry note pointing at 1 MiB.
    pub(crate) fn tiny_elf(code: &[u8], note: bool) -> Vec<u8> {
        let ehdr_size = std::mem::size_of::<Elf64_Ehdr>();
        let phdr_size = std::mem::size_of::<Elf64_Phdr>();
        let mut notes = Vec::new();
        let mut push_note = |name: &[u8], kind: u32, desc: &[u8]| {
            notes.extend_from_slice(&(name.len() as u32).to_le_bytes());
            notes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            notes.extend_from_slice(&kind.to_le_bytes());
            notes.extend_from_slice(name);
            notes.resize(notes.len().div_ceil(4) * 4, 0);
            notes.extend_from_slice(desc);
            notes.resize(notes.len().div_ceil(4) * 4, 0);
        };
        push_note(b"GNU\0", 3, &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        if note {
            push_note(
                XEN_NOTE_NAME,
                XEN_ELFNOTE_PHYS32_ENTRY,
                &(LOAD_AT as u32).to_le_bytes(),
            );
        }
        let code_at = ehdr_size + 2 * phdr_size;
        let notes_at = code_at + code.len();
        let mut ehdr = Elf64_Ehdr::default();
        ehdr.e_ident[..4].copy_from_slice(b"\x7fELF");
        ehdr.e_ident[EI_CLASS] = ELFCLASS64;
        ehdr.e_ident[EI_DATA] = ELFDATA2LSB;
        ehdr.e_ident[6] = 1;
        ehdr.e_type = 2;
        ehdr.e_machine = EM_X86_64;
        ehdr.e_version = 1;
        ehdr.e_entry = LOAD_AT;
        ehdr.e_phoff = ehdr_size as u64;
        ehdr.e_ehsize = ehdr_size as u16;
        ehdr.e_phentsize = phdr_size as u16;
        ehdr.e_phnum = 2;
        let load = Elf64_Phdr {
            p_type: PT_LOAD,
            p_flags: 5,
            p_offset: code_at as u64,
            p_vaddr: LOAD_AT,
            p_paddr: LOAD_AT,
            p_filesz: code.len() as u64,
            p_memsz: code.len() as u64 + 0x1000,
            p_align: 0x1000,
        };
        let note_hdr = Elf64_Phdr {
            p_type: PT_NOTE,
            p_flags: 4,
            p_offset: notes_at as u64,
            p_filesz: notes.len() as u64,
            p_memsz: notes.len() as u64,
            p_align: 4,
            ..Default::default()
        };
        let mut image = Vec::new();
        image.extend_from_slice(ehdr.as_slice());
        image.extend_from_slice(load.as_slice());
        image.extend_from_slice(note_hdr.as_slice());
        image.extend_from_slice(code);
        image.extend_from_slice(&notes);
        image
    }

    #[test]
    fn the_pvh_note_is_found_after_other_notes() {
        let image = tiny_elf(&[0xf4], true);
        assert_eq!(find_entry(&mut Cursor::new(&image)), Ok(LOAD_AT as u32));
    }

    #[test]
    fn images_pvh_cannot_boot_are_refused_saying_why() {
        let no_note = tiny_elf(&[0xf4], false);
        let err = find_entry(&mut Cursor::new(&no_note)).expect_err("no note");
        assert!(
            err.contains("without a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)"),
            "{err}"
        );

        let mut elf32 = tiny_elf(&[0xf4], true);
        elf32[EI_CLASS] = 1;
        assert!(find_entry(&mut Cursor::new(&elf32))
            .expect_err("32-bit")
            .contains("32-bit ELF"));

        let mut arm = tiny_elf(&[0xf4], true);
        arm[18..20].copy_from_slice(&183u16.to_le_bytes());
        assert!(find_entry(&mut Cursor::new(&arm))
            .expect_err("aarch64")
            .contains("machine 183"));

        let whole = tiny_elf(&[0xf4], true);
        for cut in [10, 70, 100, whole.len() - 2] {
            let err = find_entry(&mut Cursor::new(&whole[..cut])).expect_err("truncated");
            assert!(
                err.contains("truncated") || err.contains("cut off"),
                "{cut}: {err}"
            );
        }

        // A descriptor too short for an address.
        let mut short = tiny_elf(&[0xf4], true);
        // The last note is namesz, descsz, type, "Xen\0", the 4-byte address.
        let desc_len_at = short.len() - 16;
        short[desc_len_at..desc_len_at + 4].copy_from_slice(&2u32.to_le_bytes());
        let err = find_entry(&mut Cursor::new(&short)).expect_err("short");
        assert!(err.contains("fewer than a 32-bit address"), "{err}");

        // A segment below 1 MiB would overlap the boot structures.
        let mut low = tiny_elf(&[0xf4], true);
        let paddr_at = std::mem::size_of::<Elf64_Ehdr>() + 24;
        low[paddr_at..paddr_at + 8].copy_from_slice(&0x7000u64.to_le_bytes());
        assert!(find_entry(&mut Cursor::new(&low))
            .expect_err("low")
            .contains("below 1 MiB"));
    }

    #[test]
    fn a_non_pvh_elf_is_refused_naming_the_file() {
        let file = vmm_sys_util::tempfile::TempFile::new().expect("temp");
        std::fs::write(file.as_path(), tiny_elf(&[0xf4], false)).expect("write");
        let err = boot::check_kernel(file.as_path()).expect_err("no PVH note");
        let text = err.to_string();
        assert!(
            text.starts_with(&file.as_path().display().to_string()),
            "{text}"
        );
        assert!(text.contains("PVH entry note"), "{text}");
        std::fs::write(file.as_path(), tiny_elf(&[0xf4], true)).expect("write");
        assert_eq!(
            boot::check_kernel(file.as_path()).ok(),
            Some(boot::KernelFormat::PvhElf {
                entry: LOAD_AT as u32
            })
        );
    }

    #[test]
    fn load_writes_the_start_info_memory_map_module_and_cmdline() {
        let size = 64u64 << 20;
        let mem = GuestMemoryMmap::<()>::from_ranges(&layout::ram_regions(size)).expect("mem");
        let kernel = vmm_sys_util::tempfile::TempFile::new().expect("temp");
        let code = [0xfa, 0xf4, 0xeb, 0xfd]; // cli; hlt; jmp
        std::fs::write(kernel.as_path(), tiny_elf(&code, true)).expect("write");
        let initrd = vmm_sys_util::tempfile::TempFile::new().expect("temp");
        std::fs::write(initrd.as_path(), vec![0x5a; 10_000]).expect("write");
        let e820 = layout::e820_map(size);
        let rsdp = GuestAddress(0xe0000);
        let entry = load(
            &mem,
            kernel.as_path(),
            Some(initrd.as_path()),
            "console=ttyS0 hostile",
            &e820,
            rsdp,
        )
        .expect("loads");
        assert_eq!(entry, EntryPoint::Pvh { entry: 0x10_0000 });

        let mut loaded = [0u8; 4];
        mem.read_slice(&mut loaded, GuestAddress(LOAD_AT))
            .expect("code");
        assert_eq!(loaded, code);

        let info: hvm_start_info = mem.read_obj(layout::PVH_INFO_START).expect("info");
        assert_eq!(info.magic, 0x336e_c578);
        assert_eq!(info.version, 1);
        assert_eq!(info.flags, 0);
        assert_eq!(info.nr_modules, 1);
        assert_eq!(info.modlist_paddr, layout::PVH_MODLIST_START.raw_value());
        assert_eq!(info.cmdline_paddr, layout::CMDLINE_START.raw_value());
        assert_eq!(info.rsdp_paddr, 0xe0000);
        assert_eq!(info.memmap_paddr, layout::PVH_MEMMAP_START.raw_value());
        assert_eq!(info.memmap_entries as usize, e820.len());

        for (i, (addr, len, kind)) in e820.iter().enumerate() {
            let at = layout::PVH_MEMMAP_START.unchecked_add(i as u64 * 24);
            let entry: hvm_memmap_table_entry = mem.read_obj(at).expect("memmap");
            assert_eq!((entry.addr, entry.size, entry.type_), (*addr, *len, *kind));
        }

        let module: hvm_modlist_entry = mem.read_obj(layout::PVH_MODLIST_START).expect("mod");
        assert_eq!(module.size, 10_000);
        assert_eq!(module.paddr % 4096, 0);
        assert!(module.paddr >= LOAD_AT + 0x1000, "above the image's bss");
        assert!(module.paddr + module.size <= size, "inside RAM");
        let mut first = [0u8; 2];
        mem.read_slice(&mut first, GuestAddress(module.paddr))
            .expect("module bytes");
        assert_eq!(first, [0x5a, 0x5a]);

        let mut line = vec![0u8; 22];
        mem.read_slice(&mut line, layout::CMDLINE_START)
            .expect("cmdline");
        assert_eq!(&line, b"console=ttyS0 hostile\0");

        // Without an initramfs: no module.
        let mem = GuestMemoryMmap::<()>::from_ranges(&layout::ram_regions(size)).expect("mem");
        load(&mem, kernel.as_path(), None, "", &e820, rsdp).expect("loads");
        let info: hvm_start_info = mem.read_obj(layout::PVH_INFO_START).expect("info");
        assert_eq!((info.nr_modules, info.modlist_paddr), (0, 0));
        assert!(mem.last_addr().raw_value() >= size - 1);
    }

    #[test]
    fn entry_state_is_what_the_abi_asks() {
        let s = sregs(kvm_sregs {
            cr0: 0x6000_0011,
            cr4: 0x20,
            efer: 0x500,
            ..Default::default()
        });
        assert_eq!((s.cr0, s.cr3, s.cr4, s.efer), (1, 0, 0, 0));
        // 32-bit execute/read code, base 0, limit 4 GiB.
        assert_eq!(
            (
                s.cs.base,
                s.cs.limit,
                s.cs.type_,
                s.cs.db,
                s.cs.l,
                s.cs.s,
                s.cs.present
            ),
            (0, 0xffff_ffff, 0xb, 1, 0, 1, 1)
        );
        assert_eq!(s.cs.selector, 8);
        for data in [s.ds, s.es, s.fs, s.gs, s.ss] {
            assert_eq!(
                (data.base, data.limit, data.type_, data.db, data.selector),
                (0, 0xffff_ffff, 0x3, 1, 16)
            );
        }
        // A busy 32-bit TSS, base 0, limit 0x67.
        assert_eq!(
            (
                s.tr.base,
                s.tr.limit,
                s.tr.type_,
                s.tr.s,
                s.tr.present,
                s.tr.g
            ),
            (0, 0x67, 0xb, 0, 1, 0)
        );
        assert_eq!(s.gdt.base, layout::GDT_START.raw_value());
        assert_eq!(s.gdt.limit, 31);

        let r = regs(0x10_0abc);
        assert_eq!(r.rip, 0x10_0abc);
        assert_eq!(r.rbx, layout::PVH_INFO_START.raw_value());
        assert_eq!(r.rflags, 0x2, "IF, TF and VM clear");
    }

    #[test]
    fn boot_tables_for_pvh_hold_the_flat_32bit_gdt_and_no_page_tables() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).expect("mem");
        boot::write_boot_tables(&mem, &EntryPoint::Pvh { entry: 0x10_0000 }).expect("tables");
        let code: u64 = mem
            .read_obj(layout::GDT_START.unchecked_add(8))
            .expect("gdt");
        assert_eq!(code, 0x00cf_9b00_0000_ffff);
        let tss: u64 = mem
            .read_obj(layout::GDT_START.unchecked_add(24))
            .expect("gdt");
        assert_eq!(tss, 0x0000_8b00_0000_0067);
        let pml4: u64 = mem.read_obj(layout::PML4_START).expect("pml4");
        assert_eq!(pml4, 0, "paging is off: no page tables written");
    }

    #[test]
    fn memory_maps_that_do_not_fit_are_refused() {
        let many: Vec<E820Entry> = (0..layout::PVH_MEMMAP_MAX_ENTRIES as u64 + 1)
            .map(|i| (i << 20, 1 << 20, 1))
            .collect();
        let err = memory_map(&many).expect_err("too long");
        assert!(err.to_string().contains("more than the"), "{err}");
        assert_eq!(memory_map(&many[..3]).map(|m| m.len()).ok(), Some(3));
    }
}
