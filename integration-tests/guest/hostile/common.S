/*
 * Shared by the raw PVH guests (idle.S, hostile.S): the PVH entry note, the 32-bit entry
 * (own GDT, stack, an IDT whose handlers record a fault and resume where the code said),
 * console output on COM1, and printing what the VMM put in hvm_start_info.
 *
 * Output goes to COM1's transmit register without polling the line status: pv-vmm's
 * 16550 (vm-superio) takes every byte at once, so each output byte is exactly one port
 * write that reaches the VMM. The guests count every port and MMIO access they make that
 * reaches the VMM (io_out, io_in, mmio) so that the test can compare with pv-vmm's exit
 * counters.
 *
 * Register use: the print routines clobber eax, ecx, edx, esi, edi; ebx and ebp survive.
 * They are written once and assembled twice (ROUTINES 32, ROUTINES 64): every instruction
 * in them means the same in 32-bit and 64-bit mode (no push/pop, addresses below 4 GiB).
 */

#define COM1_THR 0x3f8
#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define SEL_CODE32 0x08
#define SEL_DATA 0x10
#define SEL_CODE64 0x18

/* The PVH entry note: owner "Xen", type XEN_ELFNOTE_PHYS32_ENTRY, a 32-bit address. */
    .section .note.PVH, "a", @note
    .balign 4
    .long 4
    .long 4
    .long XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .long pvh_start

/* PRINT "text"[, mode]: prints a string literal (C escapes allowed). */
.macro PRINT str, m=32
    .pushsection .rodata
9001:
    .asciz "\str"
    .popsection
    movl $9001b, %esi
    call puts_\m
.endm

/* HEX32 mem[, mode]: prints the dword at mem as 8 hex digits. */
.macro HEX32 mem, m=32
    movl \mem, %eax
    call puthex32_\m
.endm

/* HEX64 mem[, mode]: prints the qword at mem as 16 hex digits. */
.macro HEX64 mem, m=32
    movl $\mem, %esi
    call puthex64_\m
.endm

/* TRY label: the next instruction may fault; a fault resumes at label. */
.macro TRY label
    movl fault_count, %eax
    movl %eax, fault_before
    movl $\label, fault_resume
.endm

/* CAUGHT dest: after a TRY'd instruction, dest = how many faults it took (0 or 1). */
.macro CAUGHT dest
    movl $0, fault_resume
    movl fault_count, %eax
    subl fault_before, %eax
    movl %eax, \dest
.endm

.macro ROUTINES m
/* putc: %al to COM1; one counted port write. Clobbers edx. */
putc_\m:
    movl $COM1_THR, %edx
    outb %al, %dx
    incl io_out
    ret

/* puts: the NUL-terminated string at %esi. */
puts_\m:
1:  movb (%esi), %al
    testb %al, %al
    jz 2f
    call putc_\m
    incl %esi
    jmp 1b
2:  ret

/* puthex32: %eax as 8 hex digits. */
puthex32_\m:
    movl %eax, %edi
    movl $8, %ecx
1:  roll $4, %edi
    movl %edi, %eax
    andl $0xf, %eax
    movb hexdigits(%eax), %al
    call putc_\m
    decl %ecx
    jnz 1b
    ret

/* puthex64: the qword at %esi as 16 hex digits. */
puthex64_\m:
    movl %esi, hex_ptr
    movl 4(%esi), %eax
    call puthex32_\m
    movl hex_ptr, %esi
    movl (%esi), %eax
    jmp puthex32_\m
.endm

/* The 32-bit entry: EBX holds the start info's address, paging is off. */
    .section .text.entry, "ax"
    .code32
    .globl pvh_start
pvh_start:
    cli
    cld
    movl %ebx, start_info_ptr
    movl $stack_top, %esp
    lgdt gdtr
    ljmp $SEL_CODE32, $1f
1:  movl $SEL_DATA, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    call setup_idt32
    jmp guest_main32

    .text
    .code32
    ROUTINES 32

/* 32 interrupt gates to 16-byte stubs; each stub pushes an error code (if the CPU does not)
 * and the vector. */
setup_idt32:
    movl $idt32, %edi
    movl $stubs32, %edx
    movl $32, %ecx
1:  movl %edx, %eax
    andl $0xffff, %eax
    orl $(SEL_CODE32 << 16), %eax
    movl %eax, (%edi)
    movl %edx, %eax
    andl $0xffff0000, %eax
    orl $0x8e00, %eax
    movl %eax, 4(%edi)
    addl $8, %edi
    addl $16, %edx
    decl %ecx
    jnz 1b
    lidt idtr32
    ret

    .balign 16
stubs32:
    .set vec, 0
    .rept 32
    .balign 16
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushl $0
    .endif
    pushl $vec
    jmp fault32
    .set vec, vec + 1
    .endr

/* Stack: vector, error code, EIP, CS, EFLAGS. An expected fault (fault_resume set) resumes
 * there; anything else is reported and the vCPU halts for good. */
fault32:
    movl %eax, fault_eax
    movl (%esp), %eax
    movl %eax, last_fault_vector
    incl fault_count
    movl fault_resume, %eax
    testl %eax, %eax
    jz 1f
    movl %eax, 8(%esp)
    movl $0, fault_resume
    movl fault_eax, %eax
    addl $8, %esp
    iret
1:  movl 8(%esp), %eax
    movl %eax, fault_ip
    PRINT "@@HOSTILE-UNEXPECTED-FAULT vector="
    HEX32 last_fault_vector
    PRINT " eip="
    HEX32 fault_ip
    PRINT "@@\n"
halt_forever32:
    cli
1:  hlt
    jmp 1b

/* Prints hvm_start_info, the command line, the memory map, module 0's first bytes, and
 * sets ram_end to the end of the highest RAM entry. */
print_start_info32:
    movl start_info_ptr, %ebx
    PRINT "@@PVH magic="
    HEX32 (%ebx)
    PRINT " version="
    HEX32 4(%ebx)
    PRINT " flags="
    HEX32 8(%ebx)
    PRINT " modules="
    HEX32 12(%ebx)
    PRINT " rsdp="
    HEX32 32(%ebx)
    PRINT " memmap_entries="
    HEX32 48(%ebx)
    PRINT "@@\n"
    PRINT "@@PVH-CMDLINE "
    movl 24(%ebx), %esi
    call puts_32
    PRINT "@@\n"
    movl 40(%ebx), %ebp
    movl 48(%ebx), %eax
    movl %eax, entries_left
1:  cmpl $0, entries_left
    je 3f
    PRINT "@@PVH-MEM "
    movl %ebp, %esi
    call puthex64_32
    PRINT " "
    leal 8(%ebp), %esi
    call puthex64_32
    PRINT " "
    HEX32 16(%ebp)
    PRINT "@@\n"
    cmpl $1, 16(%ebp)
    jne 2f
    movl (%ebp), %eax
    movl 4(%ebp), %edx
    addl 8(%ebp), %eax
    adcl 12(%ebp), %edx
    cmpl ram_end+4, %edx
    jb 2f
    ja 4f
    cmpl ram_end, %eax
    jbe 2f
4:  movl %eax, ram_end
    movl %edx, ram_end+4
2:  addl $24, %ebp
    decl entries_left
    jmp 1b
3:  cmpl $0, 12(%ebx)
    je 5f
    movl 16(%ebx), %ebp
    PRINT "@@PVH-MODULE paddr="
    HEX32 (%ebp)
    PRINT " size="
    HEX32 8(%ebp)
    PRINT " first="
    movl (%ebp), %esi
    movl (%esi), %eax
    movl %eax, scratch
    movl 4(%esi), %eax
    movl %eax, scratch+4
    HEX32 scratch
    HEX32 scratch+4
    PRINT "@@\n"
5:  PRINT "@@PVH-RAM-END "
    HEX64 ram_end
    PRINT "@@\n"
    ret

/* Prints the KVM CPUID leaves the guest sees (signature and features at 0x40000000). */
print_kvm_cpuid32:
    movl $0x40000000, %eax
    cpuid
    movl %eax, scratch
    movl %ebx, vendor
    movl %ecx, vendor+4
    movl %edx, vendor+8
    movl $0x40000001, %eax
    cpuid
    movl %eax, scratch+4
    movl %edx, scratch+8
    PRINT "@@KVM-CPUID max="
    HEX32 scratch
    PRINT " signature="
    movl $vendor, %esi
    call puts_32
    PRINT " features="
    HEX32 scratch+4
    PRINT " hints="
    HEX32 scratch+8
    PRINT "@@\n"
    ret

    .section .rodata
hexdigits:
    .ascii "0123456789abcdef"

    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9b000000ffff        /* 0x08: 32-bit code, accessed */
    .quad 0x00cf93000000ffff        /* 0x10: data, accessed */
    .quad 0x00af9b000000ffff        /* 0x18: 64-bit code, accessed */
gdt_end:
gdtr:
    .word gdt_end - gdt - 1
    .long gdt
idtr32:
    .word 32 * 8 - 1
    .long idt32

    .bss
    .balign 8
start_info_ptr: .long 0
io_out: .long 0
io_in: .long 0
mmio: .long 0
hc_count: .long 0
fault_count: .long 0
fault_before: .long 0
fault_resume: .long 0
fault_eax: .long 0
fault_ip: .long 0
last_fault_vector: .long 0
hex_ptr: .long 0
entries_left: .long 0
    .balign 8
ram_end: .quad 0
scratch: .quad 0, 0
vendor: .long 0, 0, 0, 0
    .balign 8
idt32: .skip 32 * 8
    .balign 16
stack: .skip 16384
stack_top:
