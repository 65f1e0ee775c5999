/*
 * The hostile PVH guest: attacks pv-vmm's vCPU loop with what a guest controls, reports
 * every answer on COM1, then halts with interrupts off (the last steal-time value it wrote
 * points outside guest memory, so the VMM's counters must report an error for it).
 *
 * 32-bit protected mode (the PVH entry), then:
 *   1. the start info, the CPU vendor (VMMCALL on AMD/Hygon, VMCALL elsewhere) and the
 *      KVM CPUID leaves; the local APIC is software-enabled so that PV IPIs to it count;
 *   2. MSR_KVM_STEAL_TIME (0x4b564d03) written with valid, misaligned, reserved-bit,
 *      out-of-memory and huge values, each read back; #GP recorded per access;
 *   3. every hypercall number 0..64 with all-zero and all-one arguments, then the KVM
 *      hypercalls with extreme arguments (SEND_IPI bitmaps, APIC ids and ICRs,
 *      CLOCK_PAIRING addresses, KICK_CPU, SCHED_YIELD, MAP_GPA_RANGE);
 *   4. a sweep of unclaimed I/O ports (written, read back: all ones), wide and string
 *      accesses, then string accesses to the CMOS and COM1 (every element must count);
 *   5. MMIO to unbacked guest-physical addresses (written, read back: all ones);
 * then long mode (its own identity map of 4 GiB), and:
 *   6. the hypercall sweep and extremes again with 64-bit arguments;
 *   7. 64-bit MMIO;
 * and finally @@HOSTILE-DONE@@ with its own counts of port accesses, MMIO accesses,
 * hypercalls and faults, and a HLT loop with interrupts off.
 *
 * Output lines (values in hex; 32-bit mode prints 8 digits, 64-bit mode 16):
 *   @@HC <32|64> nr a0 a1 a2 a3 ret@@
 *   @@MSR value=v gp_write=n gp_read=n readback=v@@
 *   @@ST-RECORD version=v steal=v preempted=v@@   after the valid steal-time write
 *   @@PORTS ...@@ @@MMIO ...@@ @@HOSTILE-DONE io_out=n io_in=n mmio=n hypercalls=n faults=n@@
 * The APIC ids the arguments name avoid 1 (the second vCPU, never started), except with
 * `kick_ap` on the command line: then, last, the guest PV-kicks APIC 1 (KICK_CPU, a1 = 1;
 * @@KICK-AP@@ precedes its @@HC line). KVM marks that vCPU runnable although it never got
 * INIT/SIPI, so each KVM_RUN of it returns EAGAIN at once, for good: the VMM must not spin
 * on it. (APIC id 0xff would be the xAPIC broadcast, and kick both vCPUs.)
 */
#include "common.S"

#define MSR_KVM_STEAL_TIME 0x4b564d03
#define LAPIC_SVR 0xfee000f0
#define ONES 0xffffffffffffffff

    .text
    .code32
guest_main32:
    PRINT "@@HOSTILE-BEGIN@@\n"
    call print_start_info32
    call find_kick_ap32
    call detect_vendor32
    call print_kvm_cpuid32
    /* Software-enable the local APIC (spurious vector 0xff): KVM delivers and counts PV
     * IPIs only to enabled APICs. Interrupts stay off, so nothing is ever delivered. */
    movl $0x1ff, LAPIC_SVR
    call patch_tables32
    call msr_tests32
    movl $0, sweep_fill
    call sweep32
    movl $0xffffffff, sweep_fill
    call sweep32
    movl $hc_table32, %ebp
    movl $hc_table32_end, table_end
    call run_table32
    call port_sweep32
    call mmio_tests32
    jmp enter_long_mode

detect_vendor32:
    xorl %eax, %eax
    cpuid
    movl %ebx, vendor
    movl %edx, vendor+4
    movl %ecx, vendor+8
    movl $0, vendor+12
    movb $0, use_vmmcall
    cmpl $0x68747541, %ebx          /* "Auth"enticAMD */
    je 1f
    cmpl $0x6f677948, %ebx          /* "Hygo"nGenuine */
    jne 2f
1:  movb $1, use_vmmcall
2:  PRINT "@@VENDOR "
    movl $vendor, %esi
    call puts_32
    cmpb $0, use_vmmcall
    je 3f
    PRINT " insn=vmmcall@@\n"
    ret
3:  PRINT " insn=vmcall@@\n"
    ret

/* Sets kick_ap when the command line contains "kick_ap". */
find_kick_ap32:
    movl start_info_ptr, %ebx
    movl 24(%ebx), %esi
1:  cmpb $0, (%esi)
    je 4f
    movl $kick_word, %edi
    movl %esi, %edx
2:  movb (%edi), %cl
    testb %cl, %cl
    jz 3f
    cmpb (%edx), %cl
    jne 5f
    incl %edi
    incl %edx
    jmp 2b
5:  incl %esi
    jmp 1b
3:  movb $1, kick_ap
4:  ret

/* Values that depend on where RAM ends: the first page past it. */
patch_tables32:
    movl ram_end, %eax
    movl ram_end+4, %edx
    addl $0x1000, %eax
    adcl $0, %edx
    movl %eax, past_ram
    movl %edx, past_ram+4
    orl $1, %eax
    movl %eax, msr_past_ram
    movl %edx, msr_past_ram+4
    movl %eax, msr_final
    movl %edx, msr_final+4
    movl past_ram, %eax
    movl %eax, hc_past_ram+8
    movl past_ram+4, %eax
    movl %eax, hc_past_ram+12
    ret

/* Each entry of msr_table: the value (qword), then flags (qword: 1 = print the record). */
msr_tests32:
    movl $msr_table, %ebp
1:  cmpl $msr_table_end, %ebp
    jae 9f
    movl $MSR_KVM_STEAL_TIME, %ecx
    movl (%ebp), %eax
    movl 4(%ebp), %edx
    movl %eax, msr_value
    movl %edx, msr_value+4
    TRY 2f
    movl $MSR_KVM_STEAL_TIME, %ecx
    movl msr_value, %eax
    movl msr_value+4, %edx
    wrmsr
2:  CAUGHT gp_write
    TRY 3f
    movl $MSR_KVM_STEAL_TIME, %ecx
    xorl %eax, %eax
    xorl %edx, %edx
    rdmsr
3:  movl %eax, msr_readback
    movl %edx, msr_readback+4
    CAUGHT gp_read
    PRINT "@@MSR value="
    HEX64 msr_value
    PRINT " gp_write="
    HEX32 gp_write
    PRINT " gp_read="
    HEX32 gp_read
    PRINT " readback="
    HEX64 msr_readback
    PRINT "@@\n"
    cmpl $0, 8(%ebp)
    je 4f
    cmpl $0, gp_write
    jne 4f
    PRINT "@@ST-RECORD version="
    HEX32 st_record+8
    PRINT " steal="
    HEX64 st_record
    PRINT " preempted="
    HEX32 st_record+16
    PRINT "@@\n"
4:  addl $16, %ebp
    jmp 1b
9:  ret

/* do_hc32: the hypercall in cur_nr, cur_a0..cur_a3 (low dwords) -> cur_ret. */
do_hc32:
    movl %ebx, saved_bx
    movl cur_nr, %eax
    movl cur_a0, %ebx
    movl cur_a1, %ecx
    movl cur_a2, %edx
    movl cur_a3, %esi
    cmpb $0, use_vmmcall
    jne 1f
    vmcall
    jmp 2f
1:  vmmcall
2:  movl %eax, cur_ret
    movl $0, cur_ret+4
    movl saved_bx, %ebx
    incl hc_count
    ret

print_hc32:
    PRINT "@@HC 32 "
    HEX32 cur_nr
    PRINT " "
    HEX32 cur_a0
    PRINT " "
    HEX32 cur_a1
    PRINT " "
    HEX32 cur_a2
    PRINT " "
    HEX32 cur_a3
    PRINT " "
    HEX32 cur_ret
    PRINT "@@\n"
    ret

/* Hypercalls 0..64 with every argument set to sweep_fill. */
sweep32:
    movl $0, sweep_nr
1:  movl sweep_nr, %eax
    movl %eax, cur_nr
    movl $0, cur_nr+4
    movl sweep_fill, %eax
    movl $cur_a0, %edi
    movl $8, %ecx
    rep stosl
    call do_hc32
    call print_hc32
    incl sweep_nr
    cmpl $65, sweep_nr
    jb 1b
    ret

/* The table at %ebp up to table_end: nr, a0, a1, a2, a3 (qwords) per call. */
run_table32:
1:  cmpl table_end, %ebp
    jae 2f
    movl %ebp, %esi
    movl $cur_nr, %edi
    movl $10, %ecx
    rep movsl
    call do_hc32
    call print_hc32
    addl $40, %ebp
    jmp 1b
2:  ret

/* Is the port in %eax one that pv-vmm or KVM's in-kernel devices claim? ZF clear if so. */
port_claimed:
    movl $claimed_ports, %esi
1:  cmpl $claimed_ports_end, %esi
    jae 3f
    cmpw (%esi), %ax
    jb 2f
    cmpw 2(%esi), %ax
    ja 2f
    movl $1, %esi
    testl %esi, %esi
    ret
2:  addl $4, %esi
    jmp 1b
3:  xorl %esi, %esi
    testl %esi, %esi
    ret

/* Every port of the ISA range and every 64th above it, unless claimed: write 0xa5, read
 * back (absent hardware reads as ones). Then wide and string accesses. */
port_sweep32:
    movl $0, cur_port
1:  movl cur_port, %eax
    call port_claimed
    jnz 3f
    movl cur_port, %edx
    movb $0xa5, %al
    outb %al, %dx
    incl io_out
    inb %dx, %al
    incl io_in
    incl ports_swept
    cmpb $0xff, %al
    je 3f
    incl ports_not_ones
    movl cur_port, %eax
    movl %eax, first_bad_port
3:  movl $1, %eax
    cmpl $0x400, cur_port
    jb 4f
    movl $0x40, %eax
4:  addl %eax, cur_port
    cmpl $0x10000, cur_port
    jb 1b

    /* Wide accesses: PCI config (absent), the top of the port space. */
    movl $0xcf8, %edx
    movl $0x80000000, %eax
    outl %eax, %dx
    incl io_out
    movl $0xcfc, %edx
    inl %dx, %eax
    incl io_in
    call check_ones32
    movl $0xfffc, %edx
    movl $0x12345678, %eax
    outl %eax, %dx
    incl io_out
    inl %dx, %eax
    incl io_in
    call check_ones32
    movl $0xfffe, %edx
    movw $0x1234, %ax
    outw %ax, %dx
    incl io_out
    xorl %eax, %eax
    inw %dx, %ax
    incl io_in
    orl $0xffff0000, %eax
    call check_ones32
    movl $0xffff, %edx
    movb $0x5a, %al
    outb %al, %dx
    incl io_out
    xorl %eax, %eax
    inb %dx, %al
    incl io_in
    orl $0xffffff00, %eax
    call check_ones32

    /* String accesses to COM2 (absent): 16 bytes out, 8 words in. Not counted in io_out
     * and io_in: how many exits KVM makes for them is KVM's choice. */
    movl $0x2f8, %edx
    movl $string_out, %esi
    movl $16, %ecx
    rep outsb
    movl $string_in, %edi
    movl $8, %ecx
    rep insw
    movl $string_in, %esi
    movl $4, %ecx
5:  movl (%esi), %eax
    call check_ones32
    addl $4, %esi
    decl %ecx
    jnz 5b

    /* String accesses to devices that are there, whose every element must reach them
     * (pv-vmm once passed only the first): one rep insb of 4 bytes from the CMOS data
     * port with status register D selected (0x80 each), one rep outsb of a whole line to
     * COM1. Not counted in io_out and io_in either; the index write is. */
    movl $0x70, %edx
    movb $0x0d, %al
    outb %al, %dx
    incl io_out
    movl $0x71, %edx
    movl $cmos_string, %edi
    movl $4, %ecx
    rep insb
    movl $0x3f8, %edx
    movl $serial_string, %esi
    movl $(serial_string_end - serial_string), %ecx
    rep outsb

    PRINT "@@PORTS swept="
    HEX32 ports_swept
    PRINT " not_ones="
    HEX32 ports_not_ones
    PRINT " first_bad="
    HEX32 first_bad_port
    PRINT " wide_string_not_ones="
    HEX32 wide_not_ones
    PRINT " cmos_string="
    HEX32 cmos_string
    PRINT " string_ops=00000004@@\n"
    ret

check_ones32:
    cmpl $0xffffffff, %eax
    je 1f
    incl wide_not_ones
1:  ret

/* Byte, word and dword writes and reads at unbacked addresses: the 32-bit MMIO hole, the
 * HPET's address (no HPET) and, when it is below the hole, the page past the end of RAM. */
mmio_tests32:
    movl $0xd0000000, %edi
    call mmio_at32
    movl $0xfed00000, %edi
    call mmio_at32
    cmpl $0, past_ram+4
    jne 1f
    movl past_ram, %edi
    cmpl $0xc0000000, %edi
    jae 1f
    call mmio_at32
1:  PRINT "@@MMIO accesses="
    HEX32 mmio
    PRINT " not_ones="
    HEX32 mmio_not_ones
    PRINT "@@\n"
    ret

mmio_at32:
    movb $0x5a, (%edi)
    movw $0x5a5a, 2(%edi)
    movl $0x5a5a5a5a, 4(%edi)
    addl $3, mmio
    movb (%edi), %al
    cmpb $0xff, %al
    je 1f
    incl mmio_not_ones
1:  movw 2(%edi), %ax
    cmpw $0xffff, %ax
    je 2f
    incl mmio_not_ones
2:  movl 4(%edi), %eax
    cmpl $0xffffffff, %eax
    je 3f
    incl mmio_not_ones
3:  addl $3, mmio
    ret

/* Identity-map 4 GiB with 2 MiB pages, enable PAE and EFER.LME, turn paging on, and jump
 * to 64-bit code. */
enter_long_mode:
    movl $pdpt, %eax
    orl $3, %eax
    movl %eax, pml4
    movl $pd, %edi
    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    movl %eax, (%edi)
    movl %ecx, %eax
    shrl $11, %eax
    movl %eax, 4(%edi)
    addl $8, %edi
    incl %ecx
    cmpl $2048, %ecx
    jb 1b
    xorl %ecx, %ecx
2:  movl %ecx, %eax
    shll $12, %eax
    addl $pd, %eax
    orl $3, %eax
    movl %eax, pdpt(,%ecx,8)
    incl %ecx
    cmpl $4, %ecx
    jb 2b
    movl $pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000000, %eax
    movl %eax, %cr0
    ljmp $SEL_CODE64, $long_main64

    .code64
    ROUTINES 64

long_main64:
    movl $SEL_DATA, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $stack_top, %esp
    call setup_idt64
    PRINT "@@LONG-MODE@@\n", 64
    movq $0, sweep_fill
    call sweep64
    movq $-1, sweep_fill
    call sweep64
    movl $hc_table64, %ebp
    movl $hc_table64_end, table_end
    call run_table64
    call mmio_tests64
    cmpb $0, kick_ap
    je 1f
    PRINT "@@KICK-AP@@\n", 64
    movq $5, cur_nr
    movq $0, cur_a0
    movq $1, cur_a1
    movq $0, cur_a2
    movq $0, cur_a3
    call do_hc64
    call print_hc64
1:
    /* The counts, taken before the line that reports them is printed. */
    movl io_out, %eax
    movl %eax, snap_out
    movl io_in, %eax
    movl %eax, snap_in
    PRINT "@@HOSTILE-DONE io_out=", 64
    HEX32 snap_out, 64
    PRINT " io_in=", 64
    HEX32 snap_in, 64
    PRINT " mmio=", 64
    HEX32 mmio, 64
    PRINT " hypercalls=", 64
    HEX32 hc_count, 64
    PRINT " faults=", 64
    HEX32 fault_count, 64
    PRINT "@@\n", 64
halt_forever64:
    cli
1:  hlt
    jmp 1b

setup_idt64:
    movl $idt64, %edi
    movl $stubs64, %edx
    movl $32, %ecx
1:  movl %edx, %eax
    andl $0xffff, %eax
    orl $(SEL_CODE64 << 16), %eax
    movl %eax, (%edi)
    movl %edx, %eax
    andl $0xffff0000, %eax
    orl $0x8e00, %eax
    movl %eax, 4(%edi)
    movq $0, 8(%rdi)
    addl $16, %edi
    addl $16, %edx
    decl %ecx
    jnz 1b
    lidt idtr64
    ret

    .balign 16
stubs64:
    .set vec, 0
    .rept 32
    .balign 16
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp fault64
    .set vec, vec + 1
    .endr

/* Stack: vector, error code, RIP, CS, RFLAGS, RSP, SS. */
fault64:
    movq %rax, fault_rax
    movq (%rsp), %rax
    movl %eax, last_fault_vector
    incl fault_count
    movl fault_resume, %eax
    testl %eax, %eax
    jz 1f
    movq %rax, 16(%rsp)
    movl $0, fault_resume
    movq fault_rax, %rax
    addq $16, %rsp
    iretq
1:  movq 16(%rsp), %rax
    movl %eax, fault_ip
    PRINT "@@HOSTILE-UNEXPECTED-FAULT vector=", 64
    HEX32 last_fault_vector, 64
    PRINT " rip=", 64
    HEX32 fault_ip, 64
    PRINT "@@\n", 64
    jmp halt_forever64

/* do_hc64: the hypercall in cur_nr, cur_a0..cur_a3 (qwords) -> cur_ret. */
do_hc64:
    movq %rbx, saved_bx
    movq cur_nr, %rax
    movq cur_a0, %rbx
    movq cur_a1, %rcx
    movq cur_a2, %rdx
    movq cur_a3, %rsi
    cmpb $0, use_vmmcall
    jne 1f
    vmcall
    jmp 2f
1:  vmmcall
2:  movq %rax, cur_ret
    movq saved_bx, %rbx
    incl hc_count
    ret

print_hc64:
    PRINT "@@HC 64 ", 64
    HEX64 cur_nr, 64
    PRINT " ", 64
    HEX64 cur_a0, 64
    PRINT " ", 64
    HEX64 cur_a1, 64
    PRINT " ", 64
    HEX64 cur_a2, 64
    PRINT " ", 64
    HEX64 cur_a3, 64
    PRINT " ", 64
    HEX64 cur_ret, 64
    PRINT "@@\n", 64
    ret

sweep64:
    movl $0, sweep_nr
1:  movl sweep_nr, %eax
    movq %rax, cur_nr
    movq sweep_fill, %rax
    movq %rax, cur_a0
    movq %rax, cur_a1
    movq %rax, cur_a2
    movq %rax, cur_a3
    call do_hc64
    call print_hc64
    incl sweep_nr
    cmpl $65, sweep_nr
    jb 1b
    ret

run_table64:
1:  cmpl table_end, %ebp
    jae 2f
    movl %ebp, %esi
    movl $cur_nr, %edi
    movl $10, %ecx
    rep movsl
    call do_hc64
    call print_hc64
    addl $40, %ebp
    jmp 1b
2:  ret

mmio_tests64:
    movl $0xd0000100, %edi
    movabsq $0x1122334455667788, %rax
    movq %rax, (%rdi)
    incl mmio
    movq (%rdi), %rax
    incl mmio
    cmpq $-1, %rax
    je 1f
    incl mmio_not_ones
1:  PRINT "@@MMIO64 accesses=", 64
    HEX32 mmio, 64
    PRINT " not_ones=", 64
    HEX32 mmio_not_ones, 64
    PRINT "@@\n", 64
    ret

    .data
    .balign 8
/* MSR_KVM_STEAL_TIME values: (value, print the record after it). */
msr_table:
    .quad 0, 0                              /* disabled */
    .quad st_record + 1, 1                  /* valid: 64-byte aligned record, enabled */
    .quad st_record + 1 + 0x02, 0           /* reserved bit 1 */
    .quad st_record + 1 + 0x20, 0           /* reserved bit 5 */
    .quad st_record + 1 + 0x3e, 0           /* every reserved bit */
    .quad st_record + 8 + 1, 0              /* misaligned by 8 */
    .quad 0x02, 0                           /* a reserved bit, disabled */
    .quad 0xd0000001, 0                     /* the MMIO hole */
    .quad 0x000000fffffff001, 0             /* 1 TiB - 4 KiB: no RAM there */
    .quad 0xffffffffffffffc1, 0             /* beyond any physical address width */
    .quad 0x8000000000000001, 0             /* bit 63 */
msr_past_ram:
    .quad 0, 0                              /* the page past the end of RAM, enabled */
    .quad 0, 0                              /* disabled again */
msr_final:
    .quad 0, 0                              /* past the end of RAM: left programmed */
msr_table_end:

/* 32-bit mode: nr, a0, a1, a2, a3 (KVM truncates each to 32 bits). */
hc_table32:
    .quad 0xffffffff, 0, 0, 0, 0
    .quad 0x80000000, ONES, ONES, ONES, ONES
    /* SEND_IPI: a0 low bitmap, a1 high bitmap, a2 lowest APIC id, a3 ICR. */
    .quad 10, 1, 0, 0, 0xf0                 /* APIC 0, fixed vector 0xf0 */
    .quad 10, ONES, ONES, 0, 0xf0           /* 64 APIC ids from 0 */
    .quad 10, 0, 1, 0xffffffe0, 0xf0        /* the high word's base wraps to APIC 0 */
    .quad 10, ONES, ONES, 0xffffffff, 0xf0  /* nothing at or past 0xffffffff */
    .quad 10, 1, 0, 0, 0x8f0                /* logical destination: invalid */
    .quad 10, 1, 0, 0, 0x400f0              /* shorthand self: invalid */
    .quad 10, 1, 0, 0, 0x800f0              /* shorthand all: invalid */
    .quad 10, 1, 0, 0, 0xc00f0              /* shorthand all-but-self: invalid */
    .quad 10, 1, 0, 0, ONES                 /* every ICR bit: invalid */
    .quad 10, 0, 0, 0, 0xf0                 /* empty bitmaps */
    /* KICK_CPU: a0 flags, a1 APIC id. */
    .quad 5, 0, 0, 0, 0
    .quad 5, ONES, 0xfffffffe, ONES, ONES
    .quad 5, 0, 0x7fffffff, 0, 0
    /* SCHED_YIELD: a0 APIC id. */
    .quad 11, 0, 0, 0, 0
    .quad 11, 0xffffffff, ONES, ONES, ONES
    .quad 11, 2, 0, 0, 0
    /* CLOCK_PAIRING: a0 address, a1 clock type (0 = wall clock). */
    .quad 9, clock_pairing_buf, 0, 0, 0
    .quad 9, clock_pairing_buf, 1, 0, 0
    .quad 9, 0xffffffff, 0, 0, 0
hc_past_ram:
    .quad 9, 0, 0, 0, 0                     /* a0 = the page past RAM (patched) */
    /* MAP_GPA_RANGE: a0 address, a1 pages, a2 attributes. */
    .quad 12, 0, 1, 0, 0
    .quad 12, 0x1001, 0, 0, 0
    .quad 12, ONES, ONES, ONES, ONES
hc_table32_end:

/* 64-bit mode: full 64-bit arguments. */
hc_table64:
    .quad 0x100000001, 0, 0, 0, 0           /* VAPIC_POLL_IRQ with high bits: unknown */
    .quad 0x10000000a, 1, 0, 0, 0xf0        /* SEND_IPI with high bits: unknown */
    .quad ONES, ONES, ONES, ONES, ONES
    .quad 0x8000000000000000, 0, 0, 0, 0
    .quad 10, ONES, ONES, 0, 0xf0           /* 128 APIC ids from 0 */
    .quad 10, 1, 0, 0x100000000, 0xf0       /* lowest id 2^32: KVM keeps the low 32 bits */
    .quad 10, 0, 1, 0xffffffc0, 0xf0        /* the high word's base wraps to APIC 0 */
    .quad 10, ONES, ONES, ONES, 0xf0        /* nothing at or past 0xffffffff */
    .quad 10, 1, 0, 0, 0x1000000f0          /* ICR high half ignored */
    .quad 10, 1, 0, 0, 0x80000000000000f0
    .quad 10, 1, 0, 0, ONES                 /* invalid */
    .quad 10, 1, 0, 0, 0x8f0                /* logical: invalid */
    .quad 5, 0, 0x100000000, 0, 0           /* KICK_CPU, APIC id 2^32 (KVM takes an int) */
    .quad 5, ONES, 0xfffffffffffffffe, 0, 0
    .quad 11, ONES, 0, 0, 0
    .quad 11, 0x100000000, 0, 0, 0
    .quad 9, clock_pairing_buf, 0, 0, 0
    .quad 9, clock_pairing_buf, ONES, 0, 0
    .quad 9, ONES, 0, 0, 0
    .quad 9, 0x100000000000, 0, 0, 0        /* 16 TiB: no RAM there */
    .quad 12, 0, 1, 0, 0
    .quad 12, ONES, ONES, ONES, ONES
    .quad 12, 0x1000, 0xfffffffffffff000, 0x10, 0
hc_table64_end:

/* Ports pv-vmm's devices or KVM's in-kernel PIC, PIT and ELCR claim: [first, last]. */
    .balign 4
claimed_ports:
    .word 0x20, 0x21        /* PIC (KVM) */
    .word 0x40, 0x43        /* PIT (KVM) */
    .word 0x60, 0x61        /* i8042 data (pv-vmm), PC speaker (KVM) */
    .word 0x64, 0x64        /* i8042 command: 0xfe resets (pv-vmm) */
    .word 0x70, 0x71        /* CMOS (pv-vmm) */
    .word 0xa0, 0xa1        /* PIC (KVM) */
    .word 0x3f8, 0x3ff      /* COM1 (pv-vmm) */
    .word 0x4d0, 0x4d1      /* ELCR (KVM) */
    .word 0x600, 0x60f      /* ACPI PM1a and reset (pv-vmm) */
claimed_ports_end:

string_out:
    .ascii "hostile-string!!"
serial_string:
    .ascii "@@STRING-OUT one rep outsb, every byte@@\n"
serial_string_end:
kick_word:
    .asciz "kick_ap"

    .bss
    .balign 64
st_record: .skip 64
clock_pairing_buf: .skip 64
    .balign 8
cur_nr: .quad 0
cur_a0: .quad 0
cur_a1: .quad 0
cur_a2: .quad 0
cur_a3: .quad 0
cur_ret: .quad 0
saved_bx: .quad 0
fault_rax: .quad 0
sweep_fill: .quad 0
past_ram: .quad 0
msr_value: .quad 0
msr_readback: .quad 0
gp_write: .long 0
gp_read: .long 0
sweep_nr: .long 0
table_end: .long 0
cur_port: .long 0
ports_swept: .long 0
ports_not_ones: .long 0
first_bad_port: .long 0
wide_not_ones: .long 0
mmio_not_ones: .long 0
snap_out: .long 0
snap_in: .long 0
use_vmmcall: .byte 0
kick_ap: .byte 0
    .balign 8
string_in: .skip 16
cmos_string: .skip 4
    .balign 4096
pml4: .skip 4096
pdpt: .skip 4096
pd: .skip 4 * 4096
    .section .rodata
    .balign 8
idtr64:
    .word 32 * 16 - 1
    .quad idt64
    .bss
    .balign 16
idt64: .skip 32 * 16
