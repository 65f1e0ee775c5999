//! The `--cpus` keys with their values and defaults: the one table the parser takes its key
//! list from and the help text is written from, so a user reading `--cpus` help finds every
//! key, including the PV ones.

use pv_features::cpuid::KvmFeatures;
use pv_features::exits::DisableExits;

/// One `--cpus` key, as the help text describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHelp {
    /// The key.
    pub key: &'static str,
    /// Its values, in the syntax line's notation.
    pub values: &'static str,
    /// Its default, in words.
    pub default: &'static str,
    /// What it does.
    pub help: &'static str,
    /// Whether it is one of the KVM PV keys this project adds.
    pub pv: bool,
}

const fn key(
    key: &'static str,
    values: &'static str,
    default: &'static str,
    help: &'static str,
    pv: bool,
) -> KeyHelp {
    KeyHelp {
        key,
        values,
        default,
        help,
        pv,
    }
}

/// Every `--cpus` key in the order the syntax line lists them: Cloud Hypervisor's first, then
/// the KVM PV keys.
pub const CPUS_KEYS: &[KeyHelp] = &[
    key("boot", "<boot_vcpus>", "1", "vCPUs present at boot", false),
    key(
        "max",
        "<max_vcpus>",
        "the value of boot",
        "most vCPUs the VM can have (hotplug)",
        false,
    ),
    key(
        "topology",
        "<threads_per_core>:<cores_per_die>:<dies_per_package>:<packages>",
        "1:1:1:1",
        "the guest's CPU topology; the product must equal max",
        false,
    ),
    key(
        "kvm_hyperv",
        "on|off",
        "off",
        "KVM's Hyper-V leaves at 0x40000000 (needs KVM_CAP_HYPERV); the KVM PV leaves move to 0x40000100",
        false,
    ),
    key(
        "max_phys_bits",
        "<maximum_number_of_physical_bits>",
        "46",
        "the guest's physical address width",
        false,
    ),
    key(
        "affinity",
        "<list_of_vcpus_with_their_associated_cpuset>",
        "every vCPU on every host CPU",
        "pin vCPUs to host CPUs: [<vcpu>@[<host_cpu>,<first>-<last>],...]",
        false,
    ),
    key(
        "features",
        "<list_of_features_to_enable>",
        "none",
        "CPU features to enable: [amx]",
        false,
    ),
    key(
        "nested",
        "on|off",
        "on",
        "nested virtualization for the guest",
        false,
    ),
    key(
        "core_scheduling",
        "vm|vcpu|off",
        "vm",
        "Linux core scheduling cookie per VM, per vCPU, or none",
        false,
    ),
    key(
        "profile",
        "host",
        "host",
        "the CPU profile (live migration compatibility)",
        false,
    ),
    key(
        "kvm_pv",
        "all|off|[<kvm_feature>,...]",
        "all",
        "KVM PV features to offer the guest: `all` that the host supports and the configuration allows, `off` for no KVM leaves at all, or exactly the listed ones minus what the host lacks",
        true,
    ),
    key(
        "dedicated",
        "on|off",
        "off",
        "for vCPUs that each own a host CPU: the realtime hint, disable every exit the host allows (unless disable_exits says otherwise), no pv_unhalt",
        true,
    ),
    key(
        "disable_exits",
        "[<exit>,...]",
        "[] (dedicated=on: every exit the host allows)",
        "exits that stay in the guest instead of returning to KVM",
        true,
    ),
    key(
        "halt_poll_ns",
        "<nanoseconds>",
        "the kernel's halt_poll_ns",
        "the VM's maximum halt-polling time (0 turns polling off); can change while the VM runs",
        true,
    ),
    key(
        "enforce_pv_cpuid",
        "on|off",
        "on",
        "the guest may use only the PV features its CPUID advertises",
        true,
    ),
];

/// The example the help text ends with.
pub const CPUS_EXAMPLE: &str = "boot=4,dedicated=on,affinity=[0@[2],1@[3],2@[4],3@[5]]";

/// The `--cpus` keys, in [`CPUS_KEYS`] order.
pub fn cpus_key_names() -> Vec<&'static str> {
    CPUS_KEYS.iter().map(|k| k.key).collect()
}

/// The one-line syntax, Cloud Hypervisor's extended with the PV keys (for clap's `help`).
pub fn cpus_syntax() -> String {
    CPUS_KEYS
        .iter()
        .map(|k| format!("{}={}", k.key, k.values))
        .collect::<Vec<_>>()
        .join(",")
}

/// The long help for `--cpus` (for clap's `long_help`): the syntax line, then every key with
/// its values, default and meaning, then the names `kvm_pv` and `disable_exits` accept.
pub fn cpus_help_text() -> String {
    let mut text = format!("{}\n\n", cpus_syntax());
    for k in CPUS_KEYS.iter().filter(|k| !k.pv) {
        push_key(&mut text, k);
    }
    text.push_str("\nKVM paravirtual features:\n");
    for k in CPUS_KEYS.iter().filter(|k| k.pv) {
        push_key(&mut text, k);
    }
    let features: Vec<&str> = KvmFeatures::NAMES.iter().map(|(_, n)| *n).collect();
    let exits: Vec<&str> = DisableExits::NAMES.iter().map(|(_, n)| *n).collect();
    text.push_str(&format!(
        "\n  <kvm_feature>: {}\n  <exit>: {}\n\nExample: --cpus {CPUS_EXAMPLE}\n",
        features.join(", "),
        exits.join(", ")
    ));
    text
}

fn push_key(text: &mut String, k: &KeyHelp) {
    text.push_str(&format!(
        "  {}={}\n      {} (default: {})\n",
        k.key, k.values, k.help, k.default
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_starts_with_cloud_hypervisors_line() {
        let ch = "boot=<boot_vcpus>,max=<max_vcpus>,topology=<threads_per_core>:<cores_per_die>:<dies_per_package>:<packages>,kvm_hyperv=on|off,max_phys_bits=<maximum_number_of_physical_bits>,affinity=<list_of_vcpus_with_their_associated_cpuset>,features=<list_of_features_to_enable>,nested=on|off,core_scheduling=vm|vcpu|off";
        assert!(cpus_syntax().starts_with(ch), "{}", cpus_syntax());
    }

    #[test]
    fn help_names_every_pv_key_with_values_and_default() {
        let text = cpus_help_text();
        for (key, values, default) in [
            ("kvm_pv", "all|off|[<kvm_feature>,...]", "(default: all)"),
            ("dedicated", "on|off", "(default: off)"),
            (
                "disable_exits",
                "[<exit>,...]",
                "(default: [] (dedicated=on: every exit the host allows))",
            ),
            (
                "halt_poll_ns",
                "<nanoseconds>",
                "(default: the kernel's halt_poll_ns)",
            ),
            ("enforce_pv_cpuid", "on|off", "(default: on)"),
        ] {
            let line = format!("  {key}={values}\n");
            let at = text
                .find(&line)
                .unwrap_or_else(|| panic!("{key} missing:\n{text}"));
            let next = text[at + line.len()..].lines().next().unwrap_or_default();
            assert!(next.ends_with(default), "{key}: {next}");
        }
        for (_, name) in KvmFeatures::NAMES {
            assert!(text.contains(name), "feature {name} missing");
        }
        for name in ["hlt", "pause", "mwait", "cstate"] {
            assert!(text.contains(name), "exit {name} missing");
        }
    }

    #[test]
    fn help_names_every_key_once() {
        let text = cpus_help_text();
        assert_eq!(CPUS_KEYS.len(), 15);
        for k in CPUS_KEYS {
            assert_eq!(
                text.matches(&format!("\n  {}=", k.key)).count(),
                1,
                "{}",
                k.key
            );
            assert!(!k.help.is_empty() && !k.default.is_empty(), "{}", k.key);
        }
        assert_eq!(
            cpus_key_names(),
            [
                "boot",
                "max",
                "topology",
                "kvm_hyperv",
                "max_phys_bits",
                "affinity",
                "features",
                "nested",
                "core_scheduling",
                "profile",
                "kvm_pv",
                "dedicated",
                "disable_exits",
                "halt_poll_ns",
                "enforce_pv_cpuid"
            ]
        );
    }
}
