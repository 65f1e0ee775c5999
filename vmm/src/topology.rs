//! Per-vCPU CPUID adjustments on top of the host's supported list: the APIC id and logical
//! processor count (leaf 1), the x2APIC topology leaves (0xb, 0x1f), cores per package
//! (leaf 4), and the hypervisor-present bit; and the one base-leaf feature KVM emulates but
//! older kernels leave out of `KVM_GET_SUPPORTED_CPUID`, the TSC-deadline timer. The KVM
//! leaves come afterwards from the glue.

use kvm_bindings::CpuId;

/// CPUID.1:ECX bit 31: running under a hypervisor.
const HYPERVISOR_BIT: u32 = 1 << 31;
/// CPUID.1:ECX bit 24: the local APIC timer has TSC-deadline mode.
const TSC_DEADLINE_BIT: u32 = 1 << 24;
/// CPUID.1:EDX bit 28: HTT (the logical processor count field is valid).
const HTT_BIT: u32 = 1 << 28;
/// Level types of leaves 0xb/0x1f.
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// The shape of the guest's CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    /// Threads per core.
    pub threads_per_core: u32,
    /// Cores per package (dies folded in).
    pub cores_per_package: u32,
}

impl Topology {
    /// Logical processors per package.
    pub fn per_package(&self) -> u32 {
        self.threads_per_core * self.cores_per_package
    }
}

/// Bits needed to number `n` items (ceil(log2(n))).
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Sets CPUID.1:ECX.TSC_DEADLINE in `cpuid` (the host's supported list); returns whether
/// leaf 1 was there to carry it.
///
/// KVM emulates the TSC-deadline mode of its in-kernel local APIC wherever it reports
/// `KVM_CAP_TSC_DEADLINE_TIMER`, but kernels older than its 2024-12 change (9be4ec35d668)
/// do not say so in `KVM_GET_SUPPORTED_CPUID`: the VMM sets the bit itself, as QEMU and
/// Cloud Hypervisor do. Call it only with that capability and an in-kernel irqchip. Without the bit a Linux
/// guest runs its local APIC timer in one-shot mode, registers the PIT as its tick
/// broadcast device and then sends timer-broadcast IPIs (vector 0xec) between vCPUs.
pub fn advertise_tsc_deadline(cpuid: &mut CpuId) -> bool {
    let mut found = false;
    for entry in cpuid.as_mut_slice() {
        if entry.function == 0x1 {
            entry.ecx |= TSC_DEADLINE_BIT;
            found = true;
        }
    }
    found
}

/// Adjusts `cpuid` (a copy of the host's supported list) for the vCPU with `apic_id`.
pub fn patch_vcpu_cpuid(cpuid: &mut CpuId, apic_id: u32, topo: Topology) {
    let smt_shift = bits_for(topo.threads_per_core);
    let pkg_shift = bits_for(topo.per_package());
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            0x1 => {
                entry.ebx = (entry.ebx & 0x0000_ffff)
                    | ((topo.per_package().min(255)) << 16)
                    | ((apic_id & 0xff) << 24);
                entry.ecx |= HYPERVISOR_BIT;
                if topo.per_package() > 1 {
                    entry.edx |= HTT_BIT;
                }
            }
            0x4 => {
                // EAX[31:26]: cores per package - 1.
                let cores = topo.cores_per_package.clamp(1, 64) - 1;
                entry.eax = (entry.eax & 0x03ff_ffff) | (cores << 26);
            }
            0xb | 0x1f => {
                let (shift, count, level) = match entry.index {
                    0 => (smt_shift, topo.threads_per_core, LEVEL_SMT),
                    1 => (pkg_shift, topo.per_package(), LEVEL_CORE),
                    _ => (0, 0, 0),
                };
                entry.eax = shift;
                entry.ebx = count & 0xffff;
                entry.ecx = (level << 8) | (entry.index & 0xff);
                entry.edx = apic_id;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn cpuid() -> CpuId {
        let e = |function, index| kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0x0000_0800,
            ..Default::default()
        };
        CpuId::from_entries(&[e(1, 0), e(4, 0), e(0xb, 0), e(0xb, 1), e(0xb, 2)]).expect("cpuid")
    }

    #[test]
    fn tsc_deadline_goes_to_leaf_1_only() {
        let mut c = cpuid();
        assert!(advertise_tsc_deadline(&mut c));
        let s = c.as_slice();
        assert_ne!(s[0].ecx & TSC_DEADLINE_BIT, 0);
        assert!(s[1..].iter().all(|e| e.ecx & TSC_DEADLINE_BIT == 0));
        // Leaf 1's other bits are kept.
        assert_eq!(s[0].ebx, 0x800);
    }

    #[test]
    fn tsc_deadline_without_leaf_1_says_so() {
        let mut c = CpuId::from_entries(&[kvm_cpuid_entry2 {
            function: 4,
            ..Default::default()
        }])
        .expect("cpuid");
        assert!(!advertise_tsc_deadline(&mut c));
        assert_eq!(c.as_slice()[0].ecx, 0);
    }

    #[test]
    fn bits() {
        assert_eq!(
            [
                bits_for(0),
                bits_for(1),
                bits_for(2),
                bits_for(3),
                bits_for(4),
                bits_for(8)
            ],
            [0, 0, 1, 2, 2, 3]
        );
    }

    #[test]
    fn leaves_carry_the_apic_id_and_counts() {
        let mut c = cpuid();
        let topo = Topology {
            threads_per_core: 1,
            cores_per_package: 4,
        };
        patch_vcpu_cpuid(&mut c, 3, topo);
        let s = c.as_slice();
        assert_eq!(s[0].ebx, (3 << 24) | (4 << 16) | 0x800);
        assert_ne!(s[0].ecx & HYPERVISOR_BIT, 0);
        assert_ne!(s[0].edx & HTT_BIT, 0);
        assert_eq!(s[1].eax >> 26, 3);
        assert_eq!((s[2].eax, s[2].ebx, s[2].ecx, s[2].edx), (0, 1, 0x100, 3));
        assert_eq!((s[3].eax, s[3].ebx, s[3].ecx, s[3].edx), (2, 4, 0x201, 3));
        assert_eq!((s[4].eax, s[4].ebx, s[4].ecx & 0xff00), (0, 0, 0));
    }
}
