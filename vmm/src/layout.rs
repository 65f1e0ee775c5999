//! The guest-physical memory map: where boot structures, ACPI tables and RAM live, and the
//! E820 map that tells the guest.

use vm_memory::GuestAddress;

/// GDT of the boot vCPU (64-bit entry, or 32-bit flat segments for PVH).
pub const GDT_START: GuestAddress = GuestAddress(0x500);
/// Empty IDT of the boot vCPU.
pub const IDT_START: GuestAddress = GuestAddress(0x520);
/// PVH boot: the `hvm_start_info` structure EBX points at (Cloud Hypervisor's address).
pub const PVH_INFO_START: GuestAddress = GuestAddress(0x6000);
/// PVH boot: the module list (the initramfs), right after the 56-byte start info.
pub const PVH_MODLIST_START: GuestAddress = GuestAddress(0x6040);
/// PVH boot: the memory map, after the one-entry module list.
pub const PVH_MEMMAP_START: GuestAddress = GuestAddress(0x6100);
/// PVH boot: memory-map entries that fit between [`PVH_MEMMAP_START`] and the zero page.
pub const PVH_MEMMAP_MAX_ENTRIES: usize = (0x7000 - 0x6100) / 24;
/// The `boot_params` "zero page".
pub const ZERO_PAGE_START: GuestAddress = GuestAddress(0x7000);
/// Initial stack of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity-mapping page tables: PML4, PDPT, then four page directories (4 GiB in 2 MiB pages).
pub const PML4_START: GuestAddress = GuestAddress(0x9000);
/// The page-directory-pointer table.
pub const PDPTE_START: GuestAddress = GuestAddress(0xa000);
/// The first of four page directories.
pub const PDE_START: GuestAddress = GuestAddress(0xb000);
/// The kernel command line.
pub const CMDLINE_START: GuestAddress = GuestAddress(0x20000);
/// Largest command line we pass (the kernel's COMMAND_LINE_SIZE on x86).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// End of the usable low RAM (the EBDA starts here).
pub const EBDA_START: u64 = 0x9fc00;
/// The ACPI RSDP, in the BIOS area where legacy scans look for it.
pub const RSDP_START: GuestAddress = GuestAddress(0xe0000);
/// Start of high RAM (1 MiB), where the kernel loads.
pub const HIGH_RAM_START: GuestAddress = GuestAddress(0x10_0000);
/// Start of the 32-bit MMIO hole (IOAPIC at 0xfec00000, LAPIC at 0xfee00000).
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// RAM above the hole continues here.
pub const RAM_ABOVE_4G: u64 = 0x1_0000_0000;
/// The IOAPIC's MMIO base.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// The local APIC's MMIO base.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// COM1's base port.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1's interrupt line.
pub const COM1_IRQ: u32 = 4;

/// Guest RAM regions for `size` bytes: below the 32-bit hole, and the rest above 4 GiB.
pub fn ram_regions(size: u64) -> Vec<(GuestAddress, usize)> {
    let low = size.min(MMIO_HOLE_START);
    let mut regions = vec![(GuestAddress(0), low as usize)];
    if size > low {
        regions.push((GuestAddress(RAM_ABOVE_4G), (size - low) as usize));
    }
    regions
}

/// One E820 entry: address, size, type (1 = RAM).
pub type E820Entry = (u64, u64, u32);

/// The E820 RAM type.
pub const E820_RAM: u32 = 1;

/// The E820 map for `size` bytes of RAM: low RAM below the EBDA, RAM from 1 MiB up to the
/// hole, and RAM above 4 GiB. The BIOS area between (ACPI tables) is not RAM to the guest.
pub fn e820_map(size: u64) -> Vec<E820Entry> {
    let mut map = vec![(0, EBDA_START, E820_RAM)];
    let low_end = size.min(MMIO_HOLE_START);
    if low_end > HIGH_RAM_START.0 {
        map.push((HIGH_RAM_START.0, low_end - HIGH_RAM_START.0, E820_RAM));
    }
    if size > low_end {
        map.push((RAM_ABOVE_4G, size - low_end, E820_RAM));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_region() {
        assert_eq!(ram_regions(512 << 20), vec![(GuestAddress(0), 512 << 20)]);
        assert_eq!(
            e820_map(512 << 20),
            vec![(0, 0x9fc00, 1), (0x10_0000, (512 << 20) - 0x10_0000, 1)]
        );
    }

    #[test]
    fn large_guest_skips_the_hole() {
        let size = 4u64 << 30;
        assert_eq!(
            ram_regions(size),
            vec![
                (GuestAddress(0), 0xc000_0000),
                (GuestAddress(1 << 32), 1 << 30)
            ]
        );
        let map = e820_map(size);
        assert_eq!(map[1], (0x10_0000, 0xc000_0000 - 0x10_0000, 1));
        assert_eq!(map[2], (1 << 32, 1 << 30, 1));
        let ram: u64 = map.iter().map(|e| e.1).sum();
        assert!(ram < size, "the BIOS area is not RAM");
    }
}
