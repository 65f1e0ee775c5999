//! The KVM ioctl numbers pv-features issues itself (kvm-ioctls 0.25 has no wrapper for
//! them), from `include/uapi/linux/kvm.h`. A VMM's seccomp filter names them from here.

use std::os::raw::c_ulong;

use kvm_bindings::{kvm_cpuid2, KVMIO};
use vmm_sys_util::ioctl::{ioctl_expr, _IOC_NONE, _IOC_READ, _IOC_WRITE};

/// `KVM_GET_STATS_FD` = `_IO(KVMIO, 0xce)`: a VM's or vCPU's binary statistics file.
pub const KVM_GET_STATS_FD: c_ulong = ioctl_expr(_IOC_NONE, KVMIO, 0xce, 0);

/// `KVM_GET_SUPPORTED_HV_CPUID` = `_IOWR(KVMIO, 0xc1, struct kvm_cpuid2)`: the Hyper-V
/// CPUID leaves KVM can back.
pub const KVM_GET_SUPPORTED_HV_CPUID: c_ulong = ioctl_expr(
    _IOC_READ | _IOC_WRITE,
    KVMIO,
    0xc1,
    std::mem::size_of::<kvm_cpuid2>() as u32,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_numbers_are_the_kernels() {
        assert_eq!(KVM_GET_STATS_FD, 0xaece);
        assert_eq!(KVM_GET_SUPPORTED_HV_CPUID, 0xc008_aec1);
    }
}
