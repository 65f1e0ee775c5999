//! Every command the README shows prepares its host tools first: on a machine that lacks
//! them it installs them (one `apt-get install`, named in one line) before any other work,
//! or, where it cannot install, names each missing tool and its package and stops at once.
//!
//! Each command runs with a PATH from which the lab's tools are hidden (cpio, QEMU, git, the
//! C++ compiler, the linker; busybox through `PV_LAB_BUSYBOX`), with an `apt-get` that records
//! its arguments and installs nothing, and with a `cargo` that records its call and fails:
//! a command that reaches cargo (or anything else) before asking apt for what it lacks
//! fails the test. The test needs no root rights it does not already run with and changes
//! nothing outside its temporary directory but `/var/tmp`'s lock and stamp files.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use integration_tests::repo_root;

/// The tools the test hides; each is one a README command needs on a fresh machine.
const HIDDEN: &[&str] = &[
    "cpio",
    "qemu-system-x86_64",
    "c++",
    "ld",
    "cargo",
    "apt-get",
    "git",
];

/// The lab's Debian packages, as the hidden tools above make them missing.
const LAB: &[&str] = &["busybox-static", "cpio", "qemu-system-x86"];

/// The lab's and Cloud Hypervisor's build (git for the series' `git am`).
const LAB_CH: &[&str] = &["busybox-static", "cpio", "git", "qemu-system-x86"];

/// Each README command (as the README spells it) and the packages it must ask for first.
const COMMANDS: &[(&str, &[&str])] = &[
    ("scripts/run-guest", LAB),
    (
        "scripts/test",
        &[
            "binutils",
            "busybox-static",
            "cpio",
            "git",
            "qemu-system-x86",
        ],
    ),
    ("scripts/fuzz", &["g++"]),
    ("scripts/api-conformance", &["binutils"]),
    ("scripts/soak", LAB),
    ("scripts/soak --host-idle", &["binutils"]),
    ("scripts/bench", LAB_CH),
    ("scripts/bench --quick", LAB_CH),
    ("scripts/bench --no-ch", LAB),
    ("scripts/bench-boot", LAB),
    ("scripts/bench-boot --ch", LAB_CH),
    ("scripts/lab/prepare", LAB),
    ("scripts/lab/run -- true", LAB),
    ("scripts/lab/stress", LAB),
    ("scripts/build-cloud-hypervisor", &["git"]),
    ("scripts/check-cloud-hypervisor", &["git"]),
];

/// A scratch directory with the filtered PATH, the recording apt-get and cargo.
struct Sandbox {
    root: PathBuf,
}

impl Sandbox {
    fn new(name: &str) -> Self {
        let root =
            std::env::temp_dir().join(format!("pv-host-tools-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let fake = root.join("fake");
        let real = root.join("real");
        fs::create_dir_all(&fake).unwrap();
        fs::create_dir_all(&real).unwrap();
        fs::create_dir_all(root.join("etc-apt/sources.list.d")).unwrap();
        fs::write(root.join("etc-apt/sources.list"), "").unwrap();
        let log = root.join("calls.log");
        write_script(
            &fake.join("apt-get"),
            &format!(
                "#!/bin/sh\necho \"apt-get $*\" >>'{}'\nexit 0\n",
                log.display()
            ),
        );
        write_script(
            &fake.join("cargo"),
            &format!(
                "#!/bin/sh\necho \"cargo $*\" >>'{}'\necho 'fake cargo: reached before the host tools' >&2\nexit 97\n",
                log.display()
            ),
        );
        // Every other program on PATH, first one of a name wins, as PATH would find it.
        let path = std::env::var_os("PATH").unwrap_or_default();
        for dir in std::env::split_paths(&path) {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(n) = name.to_str() else { continue };
                if HIDDEN.contains(&n) || real.join(n).exists() {
                    continue;
                }
                let target = entry.path();
                let executable = fs::metadata(&target)
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false);
                if executable {
                    let _ = symlink(&target, real.join(n));
                }
            }
        }
        Sandbox { root }
    }

    /// Runs a README command in the sandbox; returns (exit code, stderr, calls log).
    fn run(&self, command: &str, install: bool) -> (i32, String, Vec<String>) {
        let log = self.root.join("calls.log");
        let _ = fs::remove_file(&log);
        let words: Vec<&str> = command.split_whitespace().collect();
        let path = format!(
            "{}:{}",
            self.root.join("fake").display(),
            self.root.join("real").display()
        );
        let mut cmd = Command::new(repo_root().join(words[0]));
        cmd.args(&words[1..])
            .current_dir(repo_root())
            .env("PATH", path)
            .env("PV_LAB", "lab")
            .env("PV_LAB_BUSYBOX", self.root.join("no-busybox"))
            .env("PV_APT_ETC", self.root.join("etc-apt"))
            .env("PV_CACHE", self.root.join("cache"))
            .env_remove("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER")
            .stdin(std::process::Stdio::null());
        if !install {
            cmd.env("PV_HOST_TOOLS_INSTALL", "no");
        }
        let out = cmd.output().unwrap();
        let calls = fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            calls,
        )
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn write_script(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The packages of the first `apt-get install` call, or None when there was none.
fn installed(calls: &[String]) -> Option<BTreeSet<String>> {
    let line = calls.iter().find(|c| c.starts_with("apt-get install "))?;
    Some(
        line.split_whitespace()
            .skip(2)
            .filter(|w| !w.starts_with('-') && !w.contains('='))
            .filter(|w| *w != "bookworm-backports")
            .map(str::to_string)
            .collect(),
    )
}

/// Every `scripts/...` command in the README's shell blocks, without its comment.
fn readme_commands() -> BTreeSet<String> {
    let readme = fs::read_to_string(repo_root().join("README.md")).unwrap();
    let mut in_block = false;
    let mut found = BTreeSet::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        let line = line.split('#').next().unwrap_or("").trim();
        if in_block && line.starts_with("scripts/") {
            found.insert(line.to_string());
        }
    }
    found
}

#[test]
fn every_readme_command_is_covered_here() {
    let covered: BTreeSet<String> = COMMANDS.iter().map(|(c, _)| c.to_string()).collect();
    let readme = readme_commands();
    assert!(readme.contains("scripts/run-guest") && readme.contains("scripts/test"));
    let missing: Vec<_> = readme.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "README commands without a host-tools check here: {missing:?}"
    );
}

#[test]
fn each_command_asks_apt_for_what_it_lacks_before_anything_else() {
    let sandbox = Sandbox::new("install");
    let mut failures = Vec::new();
    for (command, packages) in COMMANDS {
        let (code, stderr, calls) = sandbox.run(command, true);
        let want: BTreeSet<String> = packages.iter().map(|p| p.to_string()).collect();
        let first_install = calls.iter().position(|c| c.starts_with("apt-get install "));
        let first_cargo = calls.iter().position(|c| c.starts_with("cargo "));
        let said = stderr
            .lines()
            .filter(|l| l.contains(": installing ") && l.contains(" with apt-get (missing: "))
            .count();
        let problem = match (installed(&calls), first_install, first_cargo) {
            (None, _, _) => Some("no apt-get install".to_string()),
            (Some(got), _, _) if got != want => Some(format!("installed {got:?}, want {want:?}")),
            (_, Some(i), Some(c)) if c < i => Some("cargo ran before apt-get install".into()),
            _ if said != 1 => Some(format!("{said} 'installing ...' lines, want 1")),
            // The recording apt-get installs nothing: the command must notice and stop.
            _ if code == 0 || !stderr.contains("still missing after apt-get install") => Some(
                format!("exit {code} without 'still missing' (stderr: {stderr})"),
            ),
            _ => None,
        };
        if let Some(p) = problem {
            failures.push(format!(
                "{command}: {p}\n  calls: {calls:?}\n  stderr tail: {}",
                tail(&stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn without_install_rights_each_command_names_what_is_missing_and_stops() {
    let sandbox = Sandbox::new("name");
    let mut failures = Vec::new();
    for (command, packages) in COMMANDS {
        let (code, stderr, calls) = sandbox.run(command, false);
        let line = stderr.lines().find(|l| l.contains("error: missing "));
        let problem = if code != 1 {
            Some(format!("exit {code}, want 1"))
        } else if !calls.is_empty() {
            Some(format!("ran {calls:?} before stopping"))
        } else if let Some(line) = line {
            packages
                .iter()
                .find(|p| !line.split_whitespace().any(|w| w == **p))
                .map(|p| format!("'{line}' does not name package {p}"))
        } else {
            Some("no 'error: missing ...' line".to_string())
        };
        if let Some(p) = problem {
            failures.push(format!("{command}: {p}\n  stderr tail: {}", tail(&stderr)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(6)..].join("\n  ")
}
