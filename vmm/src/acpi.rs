//! ACPI tables: how the guest finds its vCPUs (MADT) and how it powers off and resets (a
//! FADT with a PM1a event/control register block and a reset register on I/O ports, and a
//! DSDT whose `_S5_` object gives the power-off sleep type). Built with the `acpi_tables`
//! crate and placed in the BIOS area, where the RSDP is found by the legacy scan and through
//! `boot_params.acpi_rsdp_addr`.
//!
//! Chosen over an MP table because the guest's `poweroff -f` needs a way to tell the VMM:
//! with ACPI it writes the S5 sleep type with SLP_EN to PM1a control, which ends the VMM.
//! Not hardware-reduced ACPI: that would hide the legacy PIC and PIT, and a guest without
//! kvmclock (`kvm_pv=off`) then has no timer to calibrate its TSC and local APIC timer
//! against and hangs early in boot.

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

use crate::layout;

const OEM_ID: [u8; 6] = *b"PVVMM ";
const OEM_TABLE_ID: [u8; 8] = *b"PVVMM   ";
const OEM_REVISION: u32 = 1;

/// PM1a event block: status (2 bytes) and enable (2 bytes); reads as "nothing pending".
pub const PM1A_EVT_PORT: u16 = 0x600;
/// Length of the PM1a event block.
pub const PM1A_EVT_LEN: u16 = 4;
/// PM1a control register (16 bits): the guest writes `SLP_TYP << 10 | SLP_EN` to sleep.
pub const PM1A_CNT_PORT: u16 = 0x604;
/// Length of the PM1a control register.
pub const PM1A_CNT_LEN: u16 = 2;
/// The reset register: the guest writes [`RESET_VALUE`] to reboot.
pub const RESET_PORT: u16 = 0x608;
/// The value that requests a reset.
pub const RESET_VALUE: u8 = 1;
/// The S5 (soft off) sleep type, as `_S5_` advertises it.
pub const S5_SLEEP_TYPE: u8 = 5;
/// `SLP_EN` in PM1 control.
pub const PM1_SLP_EN: u16 = 1 << 13;
/// Where `SLP_TYP` sits in PM1 control (bits 12:10).
pub const PM1_SLP_TYP_SHIFT: u16 = 10;
/// `SCI_EN` in PM1 control: the platform is in ACPI mode (there is no SMI to switch it).
pub const PM1_SCI_EN: u16 = 1;
/// The SCI's interrupt line.
pub const SCI_IRQ: u16 = 9;

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

    // The DSDT: `_S5_` (the power-off sleep type) and COM1 with its port range and IRQ 4,
    // so that the 8250 driver binds to a described device.
    let mut dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let s5 = aml::Package::new(vec![&S5_SLEEP_TYPE, &S5_SLEEP_TYPE, &0u8, &0u8]);
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

    let io = |port: u16, bits: u8| {
        GAS::new(
            AddressSpace::SystemIo,
            bits,
            0,
            AccessSize::Undefined,
            u64::from(port),
        )
    };
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .dsdt_64(dsdt_at);
    fadt.sci_int = SCI_IRQ.into();
    fadt.pm1a_evt_blk = u32::from(PM1A_EVT_PORT).into();
    fadt.pm1_evt_len = PM1A_EVT_LEN as u8;
    fadt.x_pm1a_evt_blk = io(PM1A_EVT_PORT, (PM1A_EVT_LEN * 8) as u8);
    fadt.pm1a_cnt_blk = u32::from(PM1A_CNT_PORT).into();
    fadt.pm1_cnt_len = PM1A_CNT_LEN as u8;
    fadt.x_pm1a_cnt_blk = io(PM1A_CNT_PORT, (PM1A_CNT_LEN * 8) as u8);
    fadt.reset_reg = io(RESET_PORT, 8);
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
    let io = aml::IO::new(layout::COM1_PORT, layout::COM1_PORT, 1, 8);
    let irq = aml::Interrupt::new(true, true, false, false, layout::COM1_IRQ);
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

/// Whether a PM1a control value asks for S5 (power off).
pub fn is_power_off(pm1_cnt: u16) -> bool {
    pm1_cnt & PM1_SLP_EN != 0 && (pm1_cnt >> PM1_SLP_TYP_SHIFT) & 0x7 == u16::from(S5_SLEEP_TYPE)
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
        // Linux writes SLP_TYPa << 10 first, then the same with SLP_EN (bit 13).
        assert!(!is_power_off(5 << 10));
        assert!(is_power_off((5 << 10) | (1 << 13) | 1));
        assert!(!is_power_off((3 << 10) | (1 << 13)), "S3 is not power-off");
        assert!(!is_power_off(PM1_SCI_EN));
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
