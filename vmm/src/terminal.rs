//! The host terminal in raw mode while the guest owns the console, restored on every exit
//! path that returns from `main` (including SIGINT/SIGTERM, which the VMM handles itself).

use std::io::IsTerminal;

use vmm_sys_util::terminal::Terminal;

/// Whether stdin is a terminal.
pub fn stdin_is_tty() -> bool {
    std::io::stdin().is_terminal()
}

/// Raw mode on stdin for as long as this lives.
#[derive(Debug)]
pub struct RawMode(());

impl RawMode {
    /// Puts stdin in raw mode.
    pub fn enter() -> Result<Self, vmm_sys_util::errno::Error> {
        std::io::stdin().lock().set_raw_mode()?;
        Ok(Self(()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Err(e) = std::io::stdin().lock().set_canon_mode() {
            log::warn!("restoring the terminal: {e}");
        }
    }
}
