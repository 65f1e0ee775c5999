//! ACPI tables: how the guest finds its vCPUs (MADT) and how it powers off and resets
//! (a hardware-reduced FADT with sleep control/status and reset registers on I/O ports, and
//! a DSDT whose `_S5_` object gives the power-off sleep type). Built with the `acpi_tables`
//! crate and placed in the BIOS area, where the RSDP is found by the legacy scan and through
//! `boot_params.acpi_rsdp_addr`.
//!
//! Chosen over an MP table because the guest's `poweroff -f` needs a way to tell the VMM:
//! with ACPI it writes the S5 sleep value to the sleep control register, which ends the VMM.

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{aml, Aml};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::{devices, layout};

const OEM_ID: [u8; 6] = *b"PVVMM ";
const OEM_TABLE_ID: [u8; 8] = *b"PVVMM   ";
const OEM_REVISION: u32 = 1;

/// The sleep control register: the guest writes `SLP_TYP << 2 | SLP_EN` (0x34 for S5).
pub const SLEEP_CONTROL_PORT: u16 = 0x600;
/// The sleep status register (reads as 0: no wake event).
pub const SLEEP_STATUS_PORT: u16 = 0x601;
/// The reset register: the guest writes [`RESET_VALUE`] to reboot.
pub const RESET_PORT: u16 = 0x602;
/// The value that requests a reset.
pub const RESET_VALUE: u8 = 1;
/// The S5 (soft off) sleep type, as `_S5_` advertises it.
pub const S5_SLEEP_TYPE: u8 = 5;
/// `SLP_EN` in the sleep control register.
pub const SLEEP_ENABLE: u8 = 1 << 5;
/// Where `SLP_TYP` sits in the sleep control register.
pub const SLEEP_TYPE_SHIFT: u8 = 2;

/// Errors of writing the tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The tables do not fit in the BIOS area.
    #[error("ACPI tables of {0} bytes do not fit below 1 MiB")]
    TooLarge(u64),
    /// More vCPUs than an 8-bit APIC id can name.
    #[error("{0} vCPUs: the MADT this VMM writes names at most 255 local APICs")]
    TooManyVcpus(u32),
    /// Writing guest memory failed.
    #[error("writing the ACPI tables into guest memory")]
    Memory(#[source] vm_memory::GuestMemoryError),
}

/// Builds the tables for `vcpus` vCPUs (APIC ids 0..vcpus) and writes them into guest
/// memory. Returns the RSDP's address.
pub fn write_tables(mem: &GuestMemoryMmap, vcpus: u32) -> Result<GuestAddress, AcpiError> {
    if vcpus > 255 {
        return Err(AcpiError::TooManyVcpus(vcpus));
    }
    let rsdp_at = layout::RSDP_START;
    let xsdt_at = align(rsdp_at.0 + Rsdp::len() as u64);

    // The DSDT: `_S5_` (the power-off sleep type) and COM1. A hardware-reduced platform has
    // no legacy PIC, so Linux maps no ISA interrupt by itself: COM1's IRQ 4 reaches the
    // IOAPIC only because its `_CRS` names GSI 4.
    let mut dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let s5 = aml::Package::new(vec![&S5_SLEEP_TYPE, &0u8, &0u8, &0u8]);
    aml::Name::new("_S5_".into(), &s5).to_aml_bytes(&mut dsdt);
    com1_device().to_aml_bytes(&mut dsdt);

    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(layout::LAPIC_ADDR),
    );
    for id in 0..vcpus {
        let id = id as u8;
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(0, layout::IOAPIC_ADDR, 0));
    let madt_bytes = bytes_of(&madt);

    // Lay out: XSDT (3 entries), FADT, MADT, DSDT.
    let xsdt_len = 36 + 3 * 8;
    let fadt_at = align(xsdt_at + xsdt_len);
    let madt_at = align(fadt_at + acpi_tables::fadt::FADT::len() as u64);
    let dsdt_at = align(madt_at + madt_bytes.len() as u64);
    let end = dsdt_at + dsdt.as_slice().len() as u64;
    if end > layout::HIGH_RAM_START.0 {
        return Err(AcpiError::TooLarge(end - rsdp_at.0));
    }

    let io = |port: u16| {
        GAS::new(
            AddressSpace::SystemIo,
            8,
            0,
            AccessSize::ByteAccess,
            u64::from(port),
        )
    };
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .dsdt_64(dsdt_at);
    fadt.sleep_control_reg = io(SLEEP_CONTROL_PORT);
    fadt.sleep_status_reg = io(SLEEP_STATUS_PORT);
    fadt.reset_reg = io(RESET_PORT);
    fadt.reset_value = RESET_VALUE;
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(*b"PVVMM\0\0\0").into();
    let fadt = fadt.finalize();

    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for table in [fadt_at, madt_at, dsdt_at] {
        xsdt.add_entry(table);
    }

    let write = |bytes: &[u8], at: u64| {
        mem.write_slice(bytes, GuestAddress(at))
            .map_err(AcpiError::Memory)
    };
    write(&bytes_of(&Rsdp::new(OEM_ID, xsdt_at)), rsdp_at.0)?;
    write(&bytes_of(&xsdt), xsdt_at)?;
    write(&bytes_of(&fadt), fadt_at)?;
    write(&madt_bytes, madt_at)?;
    write(dsdt.as_slice(), dsdt_at)?;
    log::debug!("ACPI tables for {vcpus} vCPUs at {rsdp_at:?}..{end:#x}");
    Ok(rsdp_at)
}

/// `\_SB.COM1`: an 8250 (PNP0501) at the COM1 ports with an edge-triggered, active-high
/// interrupt on GSI 4.
fn com1_device() -> impl Aml {
    let hid = aml::EISAName::new("PNP0501");
    let uid = 0u8;
    let io = aml::IO::new(devices::COM1_PORT, devices::COM1_PORT, 1, 8);
    let irq = aml::Interrupt::new(true, true, false, false, devices::COM1_IRQ);
    let crs = aml::ResourceTemplate::new(vec![&io, &irq]);
    let mut bytes = Vec::new();
    aml::Device::new(
        "_SB_.COM1".into(),
        vec![
            &aml::Name::new("_HID".into(), &hid),
            &aml::Name::new("_UID".into(), &uid),
            &aml::Name::new("_CRS".into(), &crs),
        ],
    )
    .to_aml_bytes(&mut bytes);
    RawAml(bytes)
}

/// AML already serialized.
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

fn bytes_of(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

fn align(addr: u64) -> u64 {
    (addr + 15) & !15
}

/// The value a guest writes to the sleep control register to power off.
pub const fn s5_request() -> u8 {
    (S5_SLEEP_TYPE << SLEEP_TYPE_SHIFT) | SLEEP_ENABLE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_ok(bytes: &[u8]) -> bool {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    fn table_at(mem: &GuestMemoryMmap, at: u64) -> Vec<u8> {
        let len: u32 = mem.read_obj(GuestAddress(at + 4)).expect("length");
        let mut bytes = vec![0u8; len as usize];
        mem.read_slice(&mut bytes, GuestAddress(at)).expect("table");
        bytes
    }

    #[test]
    fn tables_are_linked_and_checksummed() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).expect("mem");
        let rsdp = write_tables(&mem, 4).expect("tables");
        let mut raw = [0u8; 36];
        mem.read_slice(&mut raw, rsdp).expect("rsdp");
        assert_eq!(&raw[..8], b"RSD PTR ");
        assert!(checksum_ok(&raw[..20]) && checksum_ok(&raw));
        let xsdt_at = u64::from_le_bytes(raw[24..32].try_into().expect("8 bytes"));
        let xsdt = table_at(&mem, xsdt_at);
        assert_eq!(&xsdt[..4], b"XSDT");
        assert!(checksum_ok(&xsdt));
        let entries: Vec<u64> = xsdt[36..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let sigs: Vec<Vec<u8>> = entries
            .iter()
            .map(|at| table_at(&mem, *at)[..4].to_vec())
            .collect();
        assert_eq!(
            sigs,
            vec![b"FACP".to_vec(), b"APIC".to_vec(), b"DSDT".to_vec()]
        );
        for at in &entries {
            assert!(checksum_ok(&table_at(&mem, *at)), "table at {at:#x}");
        }
        // MADT: header (44) + 4 local APICs (8 each) + one IOAPIC (12).
        assert_eq!(table_at(&mem, entries[1]).len(), 44 + 4 * 8 + 12);
        let dsdt = table_at(&mem, entries[2]);
        assert!(dsdt.windows(4).any(|w| w == b"_S5_"));
        assert!(dsdt.windows(4).any(|w| w == b"COM1"));
    }

    #[test]
    fn s5_value_matches_linux() {
        // Linux writes (SLP_TYPa << 2) | SLP_EN to the sleep control register.
        assert_eq!(s5_request(), 0x34);
    }

    #[test]
    fn too_many_vcpus_is_an_error() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).expect("mem");
        assert!(matches!(
            write_tables(&mem, 256),
            Err(AcpiError::TooManyVcpus(256))
        ));
    }
}
