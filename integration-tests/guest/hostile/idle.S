/*
 * The idle PVH guest: prints what the VMM passed in hvm_start_info and the KVM CPUID
 * leaves, prints @@IDLE-UP@@, then halts with interrupts off for as long as the VMM runs
 * it. After boot it makes no exit that reaches the VMM: a quiet guest to drive the API
 * against (schemathesis, soak tests).
 */
#include "common.S"

    .text
    .code32
guest_main32:
    PRINT "@@IDLE-BEGIN@@\n"
    call print_start_info32
    call print_kvm_cpuid32
    PRINT "@@IDLE-UP@@\n"
    jmp halt_forever32
