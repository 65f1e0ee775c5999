//! Port I/O devices: the 8250 serial port (vm-superio) on COM1 with IRQ 4, the ACPI PM1a
//! and reset registers, an i8042 that only knows the reset command, and a CMOS clock.
//! Everything else reads as all ones and ignores writes, as absent hardware does. Every
//! access is bounded by its length and port; nothing a guest writes can make the VMM fail.

use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::acpi;

pub use crate::layout::{COM1_IRQ, COM1_PORT};
const I8042_COMMAND_PORT: u16 = 0x64;
const I8042_RESET_COMMAND: u8 = 0xfe;
const CMOS_INDEX_PORT: u16 = 0x70;
const CMOS_DATA_PORT: u16 = 0x71;

/// What a port write asks of the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmRequest {
    /// The guest powered off (ACPI S5).
    PowerOff,
    /// The guest asked for a reset (ACPI reset register or i8042).
    Reset,
}

/// Raises the serial interrupt through an eventfd registered as an irqfd.
#[derive(Debug)]
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Where serial output goes.
pub type SerialOut = Box<dyn Write + Send>;

/// The serial device, shared by the vCPU threads and the stdin reader.
pub type SharedSerial = Arc<Mutex<Serial<IrqTrigger, vm_superio::serial::NoEvents, SerialOut>>>;

/// Locks a device; a poisoned lock (a thread panicked while holding it) still gives access,
/// since the device state is plain data.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The port I/O bus of one VM.
pub struct PioBus {
    serial: SharedSerial,
    cmos_index: Mutex<u8>,
    /// PM1a enable register: ACPI checks that the enable bits it sets stick.
    pm1_enable: Mutex<u16>,
}

impl std::fmt::Debug for PioBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PioBus").finish_non_exhaustive()
    }
}

/// The size of the elements a `KVM_EXIT_IO` access of `len` bytes splits into, or `None`
/// when it is one access of all the bytes (`size` 0, or not dividing `len`).
fn element_size(len: usize, size: usize) -> Option<usize> {
    (size != 0 && len % size == 0).then_some(size)
}

impl PioBus {
    /// A bus with `serial` on COM1.
    pub fn new(serial: SharedSerial) -> Self {
        Self {
            serial,
            cmos_index: Mutex::new(0),
            pm1_enable: Mutex::new(0),
        }
    }

    /// Handles one `KVM_EXIT_IO` read: `data` holds `data.len() / size` elements of `size`
    /// bytes (more than one for a string instruction, `rep ins`), each read from `port`
    /// in turn as the CPU would. A `size` of 0, or one that does not divide the data, is
    /// taken as a single access of the whole data.
    pub fn read_elements(&self, port: u16, data: &mut [u8], size: usize) {
        match element_size(data.len(), size) {
            Some(size) => data.chunks_mut(size).for_each(|e| self.read(port, e)),
            None => self.read(port, data),
        }
    }

    /// Handles one `KVM_EXIT_IO` write of `data.len() / size` elements (more than one for
    /// `rep outs`), each written to `port` in turn; the first element that asks the VMM
    /// for something (power off, reset) ends it, and the rest are not written. `size`
    /// as in [`PioBus::read_elements`].
    pub fn write_elements(&self, port: u16, data: &[u8], size: usize) -> Option<VmRequest> {
        match element_size(data.len(), size) {
            Some(size) => data.chunks(size).find_map(|e| self.write(port, e)),
            None => self.write(port, data),
        }
    }

    /// Handles a guest read of `data.len()` bytes from `port`.
    pub fn read(&self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        let Some(first) = data.first_mut() else {
            return;
        };
        match port {
            p if (COM1_PORT..COM1_PORT + 8).contains(&p) => {
                *first = lock(&self.serial).read((p - COM1_PORT) as u8);
            }
            p if (acpi::PM1A_EVT_PORT..acpi::PM1A_EVT_PORT + acpi::PM1A_EVT_LEN).contains(&p) => {
                // Status (two bytes, nothing pending), then the enable register.
                let block = [[0, 0], lock(&self.pm1_enable).to_le_bytes()].concat();
                let offset = usize::from(p - acpi::PM1A_EVT_PORT);
                for (i, byte) in data.iter_mut().enumerate() {
                    *byte = block.get(offset + i).copied().unwrap_or(0);
                }
            }
            p if (acpi::PM1A_CNT_PORT..acpi::PM1A_CNT_PORT + acpi::PM1A_CNT_LEN).contains(&p) => {
                let value = acpi::PM1_SCI_EN.to_le_bytes();
                let offset = usize::from(p - acpi::PM1A_CNT_PORT);
                for (i, byte) in data.iter_mut().enumerate() {
                    *byte = value.get(offset + i).copied().unwrap_or(0);
                }
            }
            acpi::RESET_PORT => *first = 0,
            // i8042: status "no data, input buffer empty".
            I8042_COMMAND_PORT | 0x60 => *first = 0,
            CMOS_DATA_PORT => *first = cmos_read(*lock(&self.cmos_index)),
            CMOS_INDEX_PORT => *first = *lock(&self.cmos_index),
            _ => log::trace!("unhandled port read {port:#x} ({} bytes)", data.len()),
        }
    }

    /// Handles a guest write to `port`; returns what the VMM must do, if anything.
    pub fn write(&self, port: u16, data: &[u8]) -> Option<VmRequest> {
        let value = *data.first()?;
        match port {
            p if (COM1_PORT..COM1_PORT + 8).contains(&p) => {
                if let Err(e) = lock(&self.serial).write((p - COM1_PORT) as u8, value) {
                    log::warn!("serial write: {e:?}");
                }
                None
            }
            acpi::PM1A_CNT_PORT => {
                let high = data.get(1).copied().unwrap_or(0);
                acpi::is_power_off(u16::from_le_bytes([value, high])).then_some(VmRequest::PowerOff)
            }
            p if (acpi::PM1A_EVT_PORT..acpi::PM1A_EVT_PORT + acpi::PM1A_EVT_LEN).contains(&p) => {
                // Writes to the status half clear bits that are never set; writes to the
                // enable half are kept, byte by byte.
                let mut enable = lock(&self.pm1_enable);
                let mut bytes = enable.to_le_bytes();
                for (i, byte) in data.iter().enumerate() {
                    let at = usize::from(p - acpi::PM1A_EVT_PORT) + i;
                    if let Some(slot) = at.checked_sub(2).and_then(|j| bytes.get_mut(j)) {
                        *slot = *byte;
                    }
                }
                *enable = u16::from_le_bytes(bytes);
                None
            }
            acpi::RESET_PORT if value == acpi::RESET_VALUE => Some(VmRequest::Reset),
            I8042_COMMAND_PORT if value == I8042_RESET_COMMAND => Some(VmRequest::Reset),
            CMOS_INDEX_PORT => {
                // Bit 7 is the NMI mask, not part of the index.
                *lock(&self.cmos_index) = value & 0x7f;
                None
            }
            _ => {
                log::trace!("unhandled port write {port:#x} = {data:x?}");
                None
            }
        }
    }
}

/// Reads a CMOS register: the RTC from the host's UTC clock in BCD (24-hour), status
/// registers saying "no update in progress", everything else 0.
fn cmos_read(index: u8) -> u8 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let time = UtcTime::from_unix(now);
    let bcd = |v: u64| {
        let v = (v % 100) as u8;
        ((v / 10) << 4) | (v % 10)
    };
    match index {
        0x00 => bcd(time.second),
        0x02 => bcd(time.minute),
        0x04 => bcd(time.hour),
        0x06 => bcd(time.weekday + 1),
        0x07 => bcd(time.day),
        0x08 => bcd(time.month),
        0x09 => bcd(time.year % 100),
        0x32 => bcd(time.year / 100),
        0x0a => 0x26, // divider on, 1024 Hz, no update in progress
        0x0b => 0x02, // 24-hour mode, BCD
        0x0d => 0x80, // RTC power good
        _ => 0,
    }
}

/// A UTC calendar time, computed without libc: glibc's `gmtime_r` reads `/etc/localtime`
/// on first use, a file access the vCPU threads' seccomp filter forbids (and that has no
/// business on a vCPU thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UtcTime {
    year: u64,
    month: u64,
    day: u64,
    /// 0 = Sunday.
    weekday: u64,
    hour: u64,
    minute: u64,
    second: u64,
}

impl UtcTime {
    /// The calendar time `secs` seconds after 1970-01-01T00:00:00Z (proleptic Gregorian;
    /// Howard Hinnant's `civil_from_days`).
    fn from_unix(secs: u64) -> Self {
        let days = secs / 86_400;
        let rest = secs % 86_400;
        // Shift the epoch to 0000-03-01 so that leap days end each 400-year era.
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        Self {
            year,
            month,
            day,
            // 1970-01-01 was a Thursday.
            weekday: (days + 4) % 7,
            hour: rest / 3600,
            minute: rest % 3600 / 60,
            second: rest % 60,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_sizes() {
        assert_eq!(element_size(4, 1), Some(1));
        assert_eq!(element_size(8, 4), Some(4));
        assert_eq!(element_size(0, 2), Some(2));
        assert_eq!(element_size(4, 0), None);
        assert_eq!(element_size(3, 2), None);
        assert_eq!(element_size(2, 4), None);
    }

    fn bus() -> (PioBus, Arc<Mutex<Vec<u8>>>) {
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                lock(&self.0).extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Arc::new(Mutex::new(Vec::new()));
        let evt = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        let serial = Serial::new(IrqTrigger(evt), Box::new(Sink(out.clone())) as SerialOut);
        (PioBus::new(Arc::new(Mutex::new(serial))), out)
    }

    #[test]
    fn serial_output_reaches_the_sink() {
        let (bus, out) = bus();
        for b in b"hi\n" {
            assert_eq!(bus.write(COM1_PORT, &[*b]), None);
        }
        assert_eq!(lock(&out).as_slice(), b"hi\n");
    }

    #[test]
    fn power_off_and_reset_requests() {
        let (bus, _) = bus();
        assert_eq!(
            bus.write(acpi::PM1A_CNT_PORT, &[0x00, 0x14]),
            None,
            "SLP_TYP only"
        );
        assert_eq!(
            bus.write(acpi::PM1A_CNT_PORT, &[0x01, 0x34]),
            Some(VmRequest::PowerOff)
        );
        assert_eq!(
            bus.write(acpi::PM1A_CNT_PORT, &[0x00, 0x2c]),
            None,
            "S3 is not power-off"
        );
        assert_eq!(
            bus.write(acpi::PM1A_CNT_PORT, &[0x34]),
            None,
            "one byte: no SLP_EN"
        );
        assert_eq!(bus.write(acpi::RESET_PORT, &[1]), Some(VmRequest::Reset));
        assert_eq!(bus.write(acpi::RESET_PORT, &[2]), None);
        assert_eq!(
            bus.write(I8042_COMMAND_PORT, &[0xfe]),
            Some(VmRequest::Reset)
        );
        assert_eq!(bus.write(I8042_COMMAND_PORT, &[0xff]), None);
    }

    #[test]
    fn pm1_control_reads_acpi_mode() {
        let (bus, _) = bus();
        let mut word = [0u8; 2];
        bus.read(acpi::PM1A_CNT_PORT, &mut word);
        assert_eq!(u16::from_le_bytes(word) & acpi::PM1_SCI_EN, 1);
        let mut status = [0xffu8; 4];
        bus.read(acpi::PM1A_EVT_PORT, &mut status);
        assert_eq!(status, [0; 4]);
        // Enable bits stick (ACPI checks), status stays clear.
        assert_eq!(bus.write(acpi::PM1A_EVT_PORT + 2, &[0x20, 0x01]), None);
        assert_eq!(bus.write(acpi::PM1A_EVT_PORT, &[0xff, 0xff]), None);
        bus.read(acpi::PM1A_EVT_PORT, &mut status);
        assert_eq!(status, [0, 0, 0x20, 0x01]);
        let mut high = [0u8];
        bus.read(acpi::PM1A_EVT_PORT + 3, &mut high);
        assert_eq!(high, [0x01]);
    }

    #[test]
    fn string_output_writes_every_element() {
        let (bus, out) = bus();
        // rep outsb of 4 bytes to the serial port: one exit, four characters.
        assert_eq!(bus.write_elements(COM1_PORT, b"abcd", 1), None);
        // A single 16-bit out to the same port: one access, its low byte.
        assert_eq!(bus.write_elements(COM1_PORT, b"ef", 2), None);
        assert_eq!(lock(&out).as_slice(), b"abcde");
    }

    #[test]
    fn string_input_reads_every_element() {
        let (bus, _) = bus();
        // rep insw of 3 words from PM1a control: each element is the register itself.
        let mut words = [0u8; 6];
        bus.read_elements(acpi::PM1A_CNT_PORT, &mut words, 2);
        let sci = acpi::PM1_SCI_EN.to_le_bytes();
        assert_eq!(words, [sci[0], sci[1], sci[0], sci[1], sci[0], sci[1]]);
        // rep insb of 3 bytes from the CMOS data port: the same register three times.
        bus.write(CMOS_INDEX_PORT, &[0x0d]);
        let mut bytes = [0u8; 3];
        bus.read_elements(CMOS_DATA_PORT, &mut bytes, 1);
        assert_eq!(bytes, [cmos_read(0x0d); 3]);
    }

    #[test]
    fn string_output_stops_at_a_request() {
        let (bus, out) = bus();
        // The reset port's value, then serial-bound bytes that must not be written after.
        assert_eq!(
            bus.write_elements(acpi::RESET_PORT, &[acpi::RESET_VALUE, b'x'], 1),
            Some(VmRequest::Reset)
        );
        assert_eq!(
            bus.write_elements(COM1_PORT, b"y", 1),
            None,
            "the bus still works"
        );
        assert_eq!(lock(&out).as_slice(), b"y");
    }

    #[test]
    fn string_io_with_odd_geometry_is_one_access() {
        let (bus, out) = bus();
        // Size 0 or one that does not divide the data (never from KVM): one access.
        assert_eq!(bus.write_elements(COM1_PORT, b"gh", 0), None);
        assert_eq!(bus.write_elements(COM1_PORT, b"ijk", 2), None);
        assert_eq!(lock(&out).as_slice(), b"gi");
        let mut data = [0u8; 3];
        bus.read_elements(0xcfc, &mut data, 2);
        assert_eq!(data, [0xff; 3]);
        bus.read_elements(0xcfc, &mut [], 4);
    }

    #[test]
    fn hostile_accesses_are_harmless() {
        let (bus, _) = bus();
        for port in [0u16, 0x80, 0xcf8, 0xcfc, 0x3ff, 0x600, 0xffff] {
            let mut big = [0u8; 8];
            bus.read(port, &mut big);
            bus.read(port, &mut []);
            assert_eq!(bus.write(port, &[]), None);
            let _ = bus.write(port, &[0xff; 4]);
        }
        let mut data = [0u8; 4];
        bus.read(0xcfc, &mut data);
        assert_eq!(data, [0xff; 4], "absent PCI reads as ones");
    }

    #[test]
    fn utc_time_matches_known_dates() {
        let t = |y, mo, d, wd, h, mi, s| UtcTime {
            year: y,
            month: mo,
            day: d,
            weekday: wd,
            hour: h,
            minute: mi,
            second: s,
        };
        assert_eq!(UtcTime::from_unix(0), t(1970, 1, 1, 4, 0, 0, 0));
        // 2000-02-29 (a leap day of a century divisible by 400), a Tuesday.
        assert_eq!(UtcTime::from_unix(951_782_400), t(2000, 2, 29, 2, 0, 0, 0));
        assert_eq!(
            UtcTime::from_unix(951_868_799),
            t(2000, 2, 29, 2, 23, 59, 59)
        );
        assert_eq!(UtcTime::from_unix(951_868_800), t(2000, 3, 1, 3, 0, 0, 0));
        // 2100-03-01: 2100 is not a leap year, so the day before is 02-28.
        assert_eq!(
            UtcTime::from_unix(4_107_542_399),
            t(2100, 2, 28, 0, 23, 59, 59)
        );
        assert_eq!(UtcTime::from_unix(4_107_542_400), t(2100, 3, 1, 1, 0, 0, 0));
        // 2026-11-26T01:30:00Z, a Thursday.
        assert_eq!(
            UtcTime::from_unix(1_795_656_600),
            t(2026, 11, 26, 4, 1, 30, 0)
        );
        // Never panics, even at the end of time.
        let end = UtcTime::from_unix(u64::MAX);
        assert!(end.month >= 1 && end.month <= 12 && end.day >= 1 && end.day <= 31);
    }

    #[test]
    fn cmos_reports_a_settled_clock() {
        let (bus, _) = bus();
        let mut v = [0u8];
        bus.write(CMOS_INDEX_PORT, &[0x8a]);
        bus.read(CMOS_DATA_PORT, &mut v);
        assert_eq!(v[0] & 0x80, 0, "update-in-progress must be clear");
        bus.write(CMOS_INDEX_PORT, &[0x09]);
        bus.read(CMOS_DATA_PORT, &mut v);
        assert!(v[0] >> 4 <= 9 && v[0] & 0xf <= 9, "BCD year {:#x}", v[0]);
    }
}
