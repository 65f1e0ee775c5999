/*
 * Guest workload: finds the KVM CPUID leaves the way Linux does (a "KVMKVMKVM\0\0\0"
 * signature at any hypervisor block base 0x40000000..0x4000ff00, step 0x100) and prints
 *
 *   @@CPUID-KVM base=0x40000000 max=0x40000001 features=0x01007efb hints=0x00000001@@
 *
 * or "@@CPUID-KVM none@@" when no block carries the signature. Before that, whatever the
 * first hypervisor block holds: its highest leaf (EAX of 0x40000000), the interface
 * signature (EAX of 0x40000001 as text) and the vendor (EBX/ECX/EDX of 0x40000000 as
 * text, last because it may hold spaces), bytes outside printable ASCII as '.':
 *
 *   @@CPUID-HV max=0x40000005 interface=Hv#1 vendor=Linux KVM Hv@@
 *   @@CPUID-HV max=0x40000001 interface=.~.. vendor=KVMKVMKVM...@@
 *
 * First of all, leaf 1's ECX and EDX: "@@CPUID-1 ecx=0x... edx=0x...@@".
 *
 * Static, no libc needed beyond printf.
 */
#include <cpuid.h>
#include <stdio.h>
#include <string.h>

static void leaf(unsigned int fn, unsigned int r[4])
{
    __cpuid_count(fn, 0, r[0], r[1], r[2], r[3]);
}

/* Copies n register bytes into out as printable text ('.' for anything else). */
static void text(const unsigned int *regs, int n, char *out)
{
    const unsigned char *b = (const unsigned char *)regs;
    for (int i = 0; i < n; i++)
        out[i] = (b[i] >= 0x20 && b[i] < 0x7f) ? (char)b[i] : '.';
    out[n] = 0;
}

int main(void)
{
    unsigned int r[4];
    char vendor[13], interface[5], sig[12];

    /* Leaf 1's feature words (ECX bit 24: TSC-deadline timer, bit 31: hypervisor). */
    leaf(1, r);
    printf("@@CPUID-1 ecx=0x%08x edx=0x%08x@@\n", r[2], r[3]);

    leaf(0x40000000, r);
    unsigned int max0 = r[0];
    text(&r[1], 12, vendor);
    leaf(0x40000001, r);
    text(&r[0], 4, interface);
    printf("@@CPUID-HV max=0x%08x interface=%s vendor=%s@@\n", max0, interface, vendor);

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
