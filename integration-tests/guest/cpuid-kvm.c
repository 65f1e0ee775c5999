/*
 * Guest workload: finds the KVM CPUID leaves the way Linux does (a "KVMKVMKVM\0\0\0"
 * signature at any hypervisor block base 0x40000000..0x4000ff00, step 0x100) and prints
 *
 *   @@CPUID-KVM base=0x40000000 max=0x40000001 features=0x01007efb hints=0x00000001@@
 *
 * or "@@CPUID-KVM none@@" when no block carries the signature; also the Hyper-V
 * signature at 0x40000000 when present ("@@CPUID-HV Microsoft Hv@@"). Static, no libc
 * needed beyond printf.
 */
#include <cpuid.h>
#include <stdio.h>
#include <string.h>

static void leaf(unsigned int fn, unsigned int r[4])
{
    __cpuid_count(fn, 0, r[0], r[1], r[2], r[3]);
}

int main(void)
{
    unsigned int r[4];
    char sig[13];

    leaf(0x40000000, r);
    memcpy(sig + 0, &r[1], 4);
    memcpy(sig + 4, &r[2], 4);
    memcpy(sig + 8, &r[3], 4);
    sig[12] = 0;
    if (strcmp(sig, "Microsoft Hv") == 0)
        printf("@@CPUID-HV %s@@\n", sig);

    for (unsigned int base = 0x40000000; base < 0x40010000; base += 0x100) {
        leaf(base, r);
        memcpy(sig + 0, &r[1], 4);
        memcpy(sig + 4, &r[2], 4);
        memcpy(sig + 8, &r[3], 4);
        if (memcmp(sig, "KVMKVMKVM\0\0\0", 12) != 0)
            continue;
        unsigned int max = r[0];
        leaf(base + 1, r);
        printf("@@CPUID-KVM base=0x%08x max=0x%08x features=0x%08x hints=0x%08x@@\n",
               base, max, r[0], r[3]);
        return 0;
    }
    printf("@@CPUID-KVM none@@\n");
    return 0;
}
