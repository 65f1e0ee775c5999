//! `scripts/lab/run` decides alone which lab failures are L1 crashing, and `--retries` runs
//! only those again: checked here against a fake QEMU (`PV_LAB_QEMU`) that plays an L1
//! console, one scripted ending per attempt (a panic, a wedge, a reset, a missing
//! `/dev/kvm`, a clean exit). Needs no KVM: the fake never runs a guest. It needs the lab's
//! host tools and the cloud kernel (for the L1 initramfs the runner builds before QEMU
//! starts); `scripts/lab/fetch-kernel` brings it once per machine.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::{repo_root, run_script, script};

/// The fake QEMU: finds the three `-serial file:` paths (console, stdout, stderr of the
/// command) and plays the next line of `$FAKE_L1_PLAN` (one ending per attempt).
const FAKE_QEMU: &str = r#"#!/bin/sh
serials=""
while [ $# -gt 0 ]; do
    [ "$1" = -serial ] && serials="$serials ${2#file:}"
    shift
done
set -- $serials
console=$1 out=$2 err=$3
n=$(cat "$FAKE_L1_STATE" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" >"$FAKE_L1_STATE"
plan=$(sed -n "${n}p" "$FAKE_L1_PLAN")
echo "[    0.000000] Linux version 6.1.0-fake" >>"$console"
case "$plan" in
nokvm) echo "@@LAB-INIT@@" >>"$console"; echo "@@LAB-NOKVM@@" >>"$console"; exit 0 ;;
esac
echo "@@LAB-INIT@@" >>"$console"
echo "@@LAB-READY@@" >>"$console"
echo "attempt $n partial" >>"$out"
case "$plan" in
panic) echo "[  133.7] Kernel panic - not syncing: corrupted stack end detected inside scheduler" >>"$console"; exit 0 ;;
reset) echo "[  133.7] reboot: Restarting system" >>"$console"; exit 0 ;;
rcu) echo "[  133.7] rcu: INFO: rcu_sched self-detected stall on CPU" >>"$console"; sleep 300 ;;
ok) echo "attempt $n done" >>"$out"; echo "to stderr" >>"$err"; echo "@@LAB-EXIT 7@@" >>"$console"; exit 0 ;;
esac
exit 3
"#;

struct Lab {
    dir: PathBuf,
}

struct Ran {
    status: i32,
    stdout: String,
    stderr: String,
    retry_log: String,
    attempts: u32,
    took: Duration,
}

impl Lab {
    /// A scratch lab whose fake L1 ends each attempt as `plan` says, in order.
    fn new(name: &str, plan: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("pv-lab-runner-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("cache")).unwrap();
        let qemu = dir.join("qemu-system-x86_64");
        fs::write(&qemu, FAKE_QEMU).unwrap();
        fs::set_permissions(&qemu, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.join("plan"), plan.join("\n") + "\n").unwrap();
        Lab { dir }
    }

    fn run(&self, runner_args: &[&str]) -> Ran {
        let kernel = kernel_dir();
        let t0 = Instant::now();
        let out = Command::new(script("lab/run"))
            .args(["--mode", "lab", "--quiet", "--timeout", "120"])
            .args(runner_args)
            .args(["--", "true"])
            .current_dir(repo_root())
            // A cache of its own: its own L1 lock (a real L1 may hold the shared one), the
            // real kernel all the same.
            .env("PV_CACHE", self.dir.join("cache"))
            .env("PV_LAB_KERNEL_DIR", &kernel)
            .env("PV_LAB_QEMU", self.dir.join("qemu-system-x86_64"))
            .env("PV_LAB_BEAT_LIMIT", "600")
            .env("PV_LAB_RETRY_LOG", self.dir.join("retries"))
            .env("FAKE_L1_PLAN", self.dir.join("plan"))
            .env("FAKE_L1_STATE", self.dir.join("state"))
            .env_remove("PV_LAB")
            .output()
            .expect("scripts/lab/run");
        let read = |name: &str| fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        Ran {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            retry_log: read("retries"),
            attempts: read("state").trim().parse().unwrap_or(0),
            took: t0.elapsed(),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The cloud kernel the lab boots (fetched once per machine).
fn kernel_dir() -> PathBuf {
    let stdout =
        run_script(&script("lab/fetch-kernel"), &["--print-dir"]).unwrap_or_else(|e| panic!("{e}"));
    let dir = PathBuf::from(stdout.trim());
    assert!(Path::new(&dir).join("boot").is_dir(), "{}", dir.display());
    dir
}

fn failure_line(stderr: &str) -> Option<&str> {
    stderr.lines().find_map(|l| l.strip_prefix("LAB FAILURE: "))
}

#[test]
fn a_panicked_l1_is_run_again_and_only_the_last_attempt_speaks() {
    let lab = Lab::new("panic-then-ok", &["panic", "ok"]);
    let ran = lab.run(&["--retries", "1"]);
    assert_eq!(ran.status, 7, "the command's status: {}", ran.stderr);
    assert_eq!(ran.attempts, 2);
    assert_eq!(
        ran.stdout, "attempt 2 partial\nattempt 2 done\n",
        "stdout is the last attempt's alone"
    );
    assert!(ran.stderr.contains("to stderr"), "{}", ran.stderr);
    let retry = ran.retry_log.trim();
    assert!(
        retry.starts_with("LAB RETRY: true (L1 crashed: kernel panic: ")
            && retry.contains("corrupted stack end")
            && retry.ends_with("attempt 2 of 2"),
        "{retry}"
    );
    assert!(
        ran.stderr.contains(retry),
        "said on stderr too: {}",
        ran.stderr
    );
}

#[test]
fn every_kind_of_l1_crash_is_retried_and_the_last_one_is_the_failure() {
    for (name, plan, reason) in [
        (
            "reset",
            ["reset", "reset"],
            "L1 crashed: reset (reboot) before the exit marker",
        ),
        ("wedge", ["rcu", "rcu"], "L1 crashed: wedged: RCU stall"),
        ("panic", ["panic", "panic"], "L1 crashed: kernel panic: "),
    ] {
        let lab = Lab::new(name, &plan);
        let ran = lab.run(&["--retries", "1"]);
        assert_eq!(ran.status, 125, "{name}: {}", ran.stderr);
        assert_eq!(ran.attempts, 2, "{name}");
        assert_eq!(
            ran.retry_log.lines().count(),
            1,
            "{name}: {}",
            ran.retry_log
        );
        let failure = failure_line(&ran.stderr).unwrap_or_default();
        assert!(failure.starts_with(reason), "{name}: {failure}");
        assert_eq!(
            ran.stdout, "attempt 2 partial\n",
            "{name}: the first attempt's stdout is kept back, the last one's is the output"
        );
        // A wedge ends within the runner's poll, not at the 120 s timeout (nor the fake's
        // 300 s sleep): two wedged attempts, each a few seconds.
        assert!(ran.took < Duration::from_secs(90), "{name}: {:?}", ran.took);
    }
}

#[test]
fn failures_that_are_not_l1_crashes_are_not_retried() {
    let lab = Lab::new("nokvm", &["nokvm", "ok"]);
    let ran = lab.run(&["--retries", "3"]);
    assert_eq!(ran.status, 125);
    assert_eq!(ran.attempts, 1, "a missing /dev/kvm would fail again");
    assert_eq!(ran.retry_log, "");
    assert_eq!(
        failure_line(&ran.stderr),
        Some("no /dev/kvm in L1 after loading irqbypass, kvm, kvm-amd")
    );
}

#[test]
fn without_retries_a_crash_ends_the_run() {
    let lab = Lab::new("no-retries", &["panic", "ok"]);
    let ran = lab.run(&[]);
    assert_eq!(ran.status, 125);
    assert_eq!(ran.attempts, 1);
    assert_eq!(ran.retry_log, "");
    assert!(failure_line(&ran.stderr).is_some_and(|f| f.starts_with("L1 crashed: kernel panic: ")));
    // Without --retries the stdout streams as it comes (nothing is kept back).
    assert_eq!(ran.stdout, "attempt 1 partial\n");
}

#[test]
fn a_bad_retry_count_is_named() {
    let lab = Lab::new("bad-count", &["ok"]);
    let ran = lab.run(&["--retries", "two"]);
    assert_eq!(ran.status, 1);
    assert!(
        ran.stderr
            .contains("--retries must be a whole number, not 'two'"),
        "{}",
        ran.stderr
    );
    assert_eq!(ran.attempts, 0);
}
