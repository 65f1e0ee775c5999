//! Bad input ends pv-vmm with one clear line on stderr and a non-zero status: no panic, no
//! backtrace. These checks stop before any VM exists, so they need no KVM.

use std::process::{Command, Output};

fn pv_vmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pv-vmm"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("running pv-vmm")
}

/// Asserts a failure with exactly one stderr line that contains `needle`.
fn fails_with(args: &[&str], needle: &str) {
    let out = pv_vmm(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one line, got:\n{stderr}");
    assert!(
        lines[0].starts_with("pv-vmm: error: "),
        "{args:?}: {stderr}"
    );
    assert!(
        lines[0].contains(needle),
        "{args:?}: `{needle}` not in: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

/// A file with a bzImage header and nothing behind it: it passes the early check.
fn bzimage_header_only() -> vmm_sys_util::tempfile::TempFile {
    let file = vmm_sys_util::tempfile::TempFile::new().expect("temp file");
    let mut image = vec![0u8; 0x1000];
    image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    image[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(file.as_path(), image).expect("write");
    file
}

fn not_a_kernel() -> vmm_sys_util::tempfile::TempFile {
    let file = vmm_sys_util::tempfile::TempFile::new().expect("temp file");
    std::fs::write(file.as_path(), vec![0u8; 4096]).expect("write");
    file
}

#[test]
fn bad_api_sockets() {
    fails_with(
        &["--api-socket", "fd=x"],
        "--api-socket fd=x: not a file descriptor number",
    );
    fails_with(
        &["--api-socket", "fd=999"],
        "--api-socket fd=999: not an open file descriptor",
    );
    fails_with(&["--api-socket", "fd=2"], "--api-socket fd=2: not a socket");
    fails_with(
        &["--api-socket", "path=/a,fd=3"],
        "expected path=PATH or fd=N",
    );
}

#[test]
fn missing_kernel() {
    fails_with(&[], "--kernel is required");
    fails_with(
        &["--kernel", "/nonexistent/vmlinuz"],
        "cannot open kernel /nonexistent/vmlinuz: No such file or directory",
    );
}

#[test]
fn kernel_that_is_not_a_bzimage() {
    let file = not_a_kernel();
    let path = file.as_path().to_str().expect("utf-8 path");
    fails_with(
        &["--kernel", path],
        &format!("{path} is not a kernel pv-vmm can boot: neither a bzImage"),
    );
}

/// An ELF64 x86-64 header with no program headers: an ELF kernel without a PVH note.
fn elf_without_pvh_note() -> vmm_sys_util::tempfile::TempFile {
    let file = vmm_sys_util::tempfile::TempFile::new().expect("temp file");
    let mut ehdr = vec![0u8; 64];
    ehdr[..4].copy_from_slice(b"\x7fELF");
    ehdr[4] = 2; // ELFCLASS64
    ehdr[5] = 1; // little-endian
    ehdr[6] = 1;
    ehdr[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    ehdr[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    ehdr[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes()); // e_entry
    ehdr[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    ehdr[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    std::fs::write(file.as_path(), ehdr).expect("write");
    file
}

#[test]
fn elf_kernel_without_pvh_note() {
    let file = elf_without_pvh_note();
    let path = file.as_path().to_str().expect("utf-8 path");
    fails_with(
        &["--kernel", path],
        &format!("{path}: an ELF image without a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)"),
    );
}

#[test]
fn bad_cpus_values() {
    let file = not_a_kernel();
    let k = file.as_path().to_str().expect("utf-8 path");
    for (cpus, needle) in [
        ("boot=x", "--cpus boot=x"),
        ("boot=2,kvm_pv=[steal_time,warp]", "unknown feature `warp`"),
        ("boot=2,dedicated=maybe", "--cpus dedicated=maybe"),
        ("boot=2,disable_exits=[nap]", "unknown exit `nap`"),
        ("boot=2,halt_poll_ns=-5", "--cpus halt_poll_ns=-5"),
        (
            "boots=2",
            "unknown key `boots` in --cpus; valid keys: boot, max",
        ),
        ("boot=2,topology=1:2", "--cpus topology=1:2"),
        ("boot=[2", "invalid --cpus syntax"),
    ] {
        fails_with(&["--kernel", k, "--cpus", cpus], needle);
    }
}

#[test]
fn bad_memory_serial_and_console_values() {
    let file = not_a_kernel();
    let k = file.as_path().to_str().expect("utf-8 path");
    fails_with(
        &["--kernel", k, "--memory", "size=lots"],
        "--memory size=lots",
    );
    fails_with(&["--kernel", k, "--memory", "size=1M"], "at least 64M");
    fails_with(
        &["--kernel", k, "--memory", "sz=1G"],
        "unknown key `sz` in --memory",
    );
    fails_with(&["--kernel", k, "--serial", "pty"], "--serial pty");
    fails_with(
        &["--kernel", k, "--console", "tty"],
        "--console tty: only `off`",
    );
    let header = bzimage_header_only();
    let h = header.as_path().to_str().expect("utf-8 path");
    fails_with(
        &["--kernel", h, "--initramfs", "/nonexistent/initrd"],
        "cannot read initramfs /nonexistent/initrd",
    );
}

#[test]
fn help_lists_every_pv_key() {
    let out = pv_vmm(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for key in [
        "kvm_pv",
        "dedicated",
        "disable_exits",
        "halt_poll_ns",
        "enforce_pv_cpuid",
    ] {
        assert!(help.contains(key), "--help does not mention {key}:\n{help}");
    }
    for flag in [
        "--kernel",
        "--initramfs",
        "--cmdline",
        "--cpus",
        "--memory",
        "--serial",
        "--console",
        "--api-socket",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}

#[test]
fn bad_seccomp_value() {
    for bad in ["on", "yes", "TRUE", ""] {
        fails_with(
            &[
                "--seccomp",
                bad,
                "--api-socket",
                "/nonexistent/dir/api.sock",
            ],
            &format!("--seccomp {bad}: expected true, false or log"),
        );
    }
}
