//! Bad PV combinations are refused before the guest starts, with one line naming the key,
//! the value and the rule or the host's limit. They need /dev/kvm (the host is probed);
//! `scripts/test` skips this file loudly where /dev/kvm is unusable.

use std::process::Command;

use kvm_ioctls::Kvm;
use pv_features::exits::DisableExits;
use pv_features::host::HostPv;

fn refused(cpus: &str) -> String {
    let kernel = vmm_sys_util::tempfile::TempFile::new().expect("temp file");
    // A header that passes the bzImage check: boot flag and "HdrS".
    let mut image = vec![0u8; 0x1000];
    image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    image[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(kernel.as_path(), image).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_pv-vmm"))
        .args([
            "--kernel",
            kernel.as_path().to_str().expect("utf-8"),
            "--cpus",
            cpus,
        ])
        .output()
        .expect("running pv-vmm");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "--cpus {cpus}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "--cpus {cpus}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn pv_rules_are_refused_naming_key_value_and_rule() {
    let err = refused("boot=2,kvm_pv=[pv_tlb_flush]");
    assert!(
        err.contains("kvm_pv=[pv_tlb_flush]") && err.contains("needs steal_time"),
        "{err}"
    );
    let err = refused("boot=2,kvm_pv=[steal_time,pv_unhalt],disable_exits=[hlt]");
    assert!(
        err.contains("pv_unhalt") && err.contains("HLT exits"),
        "{err}"
    );
    let err = refused("boot=0");
    assert!(err.contains("boot"), "{err}");
    let err = refused("boot=4,max=2");
    assert!(err.contains("max"), "{err}");
}

#[test]
fn exits_the_host_refuses_are_named() {
    let host = HostPv::probe(&Kvm::new().expect("/dev/kvm")).expect("probe");
    let refused_exits = DisableExits::all() - host.allowed_exits;
    eprintln!("host allows disabling [{}]", host.allowed_exits);
    let Some((exit, name)) = DisableExits::NAMES
        .iter()
        .find(|(e, _)| refused_exits.contains(*e))
    else {
        eprintln!("this host allows every exit: nothing to refuse here (covered by unit tests)");
        return;
    };
    let err = refused(&format!("boot=1,disable_exits=[{name}]"));
    assert!(err.contains(&format!("disable_exits=[{name}]")), "{err}");
    assert!(
        err.contains(&format!("cannot disable [{}]", exit.names().join(","))),
        "{err}"
    );
}
