/*
 * Guest workloads for the integration tests and the benchmarks: each one exercises one of
 * KVM's paravirtual features from inside a Linux guest and reports how many operations it
 * did, so the host's KVM counters can be divided by it.
 *
 *   pv-load KIND SECONDS
 *
 *   ipi        one thread per CPU, pinned; the others spin in user space (so this process's
 *              mm is live on every CPU) while the one on CPU 0 calls
 *              membarrier(PRIVATE_EXPEDITED): one multicast IPI to all other CPUs per call.
 *              op = one membarrier call. (Linux sends an all-but-self multicast with the
 *              APIC's shorthand: one ICR write, with or without PV send-IPI.)
 *   ipi-mask   as ipi, but the last CPU has no spinner (it idles), so the multicast goes to
 *              CPUs 1..N-2, a mask that is not "all but self": Linux sends it through
 *              send_IPI_mask, one ICR write per destination in x2APIC physical mode, one
 *              KVM_HC_SEND_IPI hypercall with PV send-IPI. Needs 3 CPUs or more. This is
 *              the one that shows PV send-IPI; the integration tests use it.
 *   tlb        one thread per CPU, pinned; the others spin in user space while the one on
 *              CPU 0 maps, touches and unmaps a page: one TLB shootdown of all other CPUs per
 *              munmap.                                       op = one munmap.
 *   tlb-sleep  as tlb, but the other threads mostly sleep (1 ms naps between short spins).
 *   ebizzy     one thread per CPU, each allocates a 1 MiB chunk with mmap, fills it, searches
 *              it and unmaps it (ebizzy's pattern: shootdowns while every CPU is busy).
 *              op = one chunk allocated, searched and freed.
 *   pingpong   two threads pinned to the first and the last CPU hand a token back and forth
 *              through futexes, sleeping while they wait: every hand-over wakes a sleeping
 *              vCPU.                                         op = one round trip.
 *   idle       sleeps SECONDS (the guest's vCPUs halt): a window for the host to count
 *              halt exits.                                   op = the whole sleep.
 *   vmcall     issues KVM_HC_SEND_IPI with VMCALL (Intel) or VMMCALL (AMD) from user space,
 *              once: KVM answers -KVM_EPERM (-1) to CPL 3 and does not exit to the VMM.
 *
 * Output, one line, parsed by the tests and the benchmark:
 *
 *   @@WORK kind=ipi ops=12345 seconds=5.001 per_s=2468.2 ns_per_op=405123 cpus=4@@
 *
 * (vmcall prints "@@WORK kind=vmcall ops=1 ... rax=<signed result>@@".) Exit status 0 on
 * success, 1 on a failed system call (with a message on stderr), 2 on bad arguments.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1UL << 20)
#define KVM_HC_SEND_IPI 10

static atomic_int stop;
static atomic_int ready;
static int ncpus;
/* CPUs 1..nspin get a spinner: all others, or all but the last for ipi-mask. */
static int nspin;
static const char *kind;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "pv-load %s: %s: %s\n", kind, what, strerror(errno));
    exit(1);
}

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0)
        die("sched_setaffinity");
}

static void report(unsigned long ops, double seconds, const char *extra)
{
    double per_s = seconds > 0 ? (double)ops / seconds : 0;
    double ns = ops ? seconds * 1e9 / (double)ops : 0;
    printf("@@WORK kind=%s ops=%lu seconds=%.3f per_s=%.1f ns_per_op=%.0f cpus=%d%s@@\n", kind,
           ops, seconds, per_s, ns, ncpus, extra);
    fflush(stdout);
}

/* The other CPUs' threads: keep this mm live on their CPU until told to stop. */
static void *spinner(void *arg)
{
    int cpu = (int)(intptr_t)arg;
    int naps = strcmp(kind, "tlb-sleep") == 0;
    pin(cpu);
    atomic_fetch_add(&ready, 1);
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        if (naps) {
            struct timespec nap = {0, 1000000};
            nanosleep(&nap, NULL);
            for (volatile int i = 0; i < 20000; i++)
                ;
        }
    }
    return NULL;
}

static pthread_t *start_spinners(void)
{
    pthread_t *t = calloc((size_t)ncpus, sizeof(*t));
    if (!t)
        die("calloc");
    for (int cpu = 1; cpu <= nspin; cpu++)
        if ((errno = pthread_create(&t[cpu], NULL, spinner, (void *)(intptr_t)cpu)) != 0)
            die("pthread_create");
    while (atomic_load(&ready) < nspin)
        sched_yield();
    return t;
}

/* Stops and joins the threads on CPUs first..last. */
static void join_all(pthread_t *t, int first, int last)
{
    atomic_store(&stop, 1);
    for (int cpu = first; cpu <= last; cpu++)
        pthread_join(t[cpu], NULL);
    free(t);
}

static int membarrier(int cmd)
{
    return (int)syscall(__NR_membarrier, cmd, 0, 0);
}

static void run_ipi(double seconds)
{
    pin(0);
    if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0)
        die("membarrier register");
    pthread_t *t = start_spinners();
    unsigned long ops = 0;
    double t0 = now(), end = t0 + seconds, t1;
    do {
        for (int i = 0; i < 64; i++, ops++)
            if (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0)
                die("membarrier");
    } while ((t1 = now()) < end);
    join_all(t, 1, nspin);
    char extra[32];
    snprintf(extra, sizeof(extra), " targets=%d", nspin);
    report(ops, t1 - t0, extra);
}

static void run_tlb(double seconds)
{
    long page = sysconf(_SC_PAGESIZE);
    pin(0);
    pthread_t *t = start_spinners();
    unsigned long ops = 0;
    double t0 = now(), end = t0 + seconds, t1;
    do {
        for (int i = 0; i < 16; i++, ops++) {
            volatile char *p = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE,
                                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED)
                die("mmap");
            p[0] = 1;
            if (munmap((void *)p, (size_t)page) != 0)
                die("munmap");
        }
    } while ((t1 = now()) < end);
    join_all(t, 1, nspin);
    report(ops, t1 - t0, "");
}

static atomic_ulong ebizzy_ops;

static void *ebizzy_worker(void *arg)
{
    int cpu = (int)(intptr_t)arg;
    unsigned long ops = 0;
    unsigned int seed = (unsigned int)cpu * 2654435761u + 1;
    pin(cpu);
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        uint32_t *p = mmap(NULL, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                           -1, 0);
        if (p == MAP_FAILED)
            die("mmap");
        size_t n = CHUNK / sizeof(*p);
        for (size_t i = 0; i < n; i++)
            p[i] = (uint32_t)rand_r(&seed);
        uint32_t key = p[rand_r(&seed) % n];
        size_t found = n;
        for (size_t i = 0; i < n && found == n; i++)
            if (p[i] == key)
                found = i;
        if (found == n) {
            fprintf(stderr, "pv-load ebizzy: key not found (memory corrupted?)\n");
            exit(1);
        }
        if (munmap(p, CHUNK) != 0)
            die("munmap");
        ops++;
    }
    atomic_fetch_add(&ebizzy_ops, ops);
    return NULL;
}

static void run_ebizzy(double seconds)
{
    pthread_t *t = calloc((size_t)ncpus, sizeof(*t));
    if (!t)
        die("calloc");
    double t0 = now();
    for (int cpu = 0; cpu < ncpus; cpu++)
        if ((errno = pthread_create(&t[cpu], NULL, ebizzy_worker, (void *)(intptr_t)cpu)) != 0)
            die("pthread_create");
    struct timespec nap = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&nap, &nap) != 0 && errno == EINTR)
        ;
    join_all(t, 0, ncpus - 1);
    report(atomic_load(&ebizzy_ops), now() - t0, "");
}

static void run_idle(double seconds)
{
    double t0 = now();
    struct timespec nap = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&nap, &nap) != 0 && errno == EINTR)
        ;
    report(1, now() - t0, "");
}

/* Ping-pong: the token is 0 when the first thread's turn, 1 for the second's. */
static atomic_int token;

static void futex_wait(atomic_int *addr, int val)
{
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(atomic_int *addr)
{
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void *pong(void *arg)
{
    (void)arg;
    pin(ncpus - 1);
    atomic_fetch_add(&ready, 1);
    for (;;) {
        while (atomic_load(&token) != 1) {
            if (atomic_load(&stop))
                return NULL;
            futex_wait(&token, 0);
        }
        atomic_store(&token, 0);
        futex_wake(&token);
    }
}

static void run_pingpong(double seconds)
{
    if (ncpus < 2) {
        fprintf(stderr, "pv-load pingpong: needs two CPUs, the guest has %d\n", ncpus);
        exit(2);
    }
    pthread_t t;
    pin(0);
    if ((errno = pthread_create(&t, NULL, pong, NULL)) != 0)
        die("pthread_create");
    while (atomic_load(&ready) < 1)
        sched_yield();
    unsigned long ops = 0;
    double t0 = now(), end = t0 + seconds, t1;
    do {
        for (int i = 0; i < 16; i++, ops++) {
            atomic_store(&token, 1);
            futex_wake(&token);
            while (atomic_load(&token) != 0)
                futex_wait(&token, 1);
        }
    } while ((t1 = now()) < end);
    atomic_store(&stop, 1);
    atomic_store(&token, 1);
    futex_wake(&token);
    pthread_join(t, NULL);
    report(ops, t1 - t0, "");
}

static void run_vmcall(void)
{
    unsigned int a, b, c, d;
    __cpuid(0, a, b, c, d);
    int amd = b == 0x68747541; /* "Auth" of AuthenticAMD */
    long rax = KVM_HC_SEND_IPI;
    /* All-ones bitmap from APIC id 0: would IPI every vCPU if KVM took it from CPL 3. */
    unsigned long rbx = ~0UL, rcx = 0, rdx = 0, rsi = 0x0400 | 0xfd;
    if (amd)
        __asm__ volatile("vmmcall"
                         : "+a"(rax)
                         : "b"(rbx), "c"(rcx), "d"(rdx), "S"(rsi)
                         : "memory");
    else
        __asm__ volatile("vmcall"
                         : "+a"(rax)
                         : "b"(rbx), "c"(rcx), "d"(rdx), "S"(rsi)
                         : "memory");
    char extra[64];
    snprintf(extra, sizeof(extra), " insn=%s rax=%ld", amd ? "vmmcall" : "vmcall", rax);
    report(1, 0, extra);
}

int main(int argc, char **argv)
{
    if (argc != 3 && !(argc == 2 && strcmp(argv[1], "vmcall") == 0)) {
        fprintf(stderr, "usage: pv-load ipi|ipi-mask|tlb|tlb-sleep|ebizzy|pingpong|idle SECONDS\n"
                        "       pv-load vmcall\n");
        return 2;
    }
    kind = argv[1];
    ncpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpus < 1)
        ncpus = 1;
    if (strcmp(kind, "vmcall") == 0) {
        run_vmcall();
        return 0;
    }
    char *end;
    double seconds = strtod(argv[2], &end);
    if (*end != '\0' || !(seconds > 0 && seconds <= 3600)) {
        fprintf(stderr, "pv-load: SECONDS must be a number in (0, 3600], not '%s'\n", argv[2]);
        return 2;
    }
    nspin = ncpus - 1;
    if (strcmp(kind, "ipi") == 0)
        run_ipi(seconds);
    else if (strcmp(kind, "ipi-mask") == 0) {
        if (ncpus < 3) {
            fprintf(stderr, "pv-load ipi-mask: needs three CPUs, the guest has %d\n", ncpus);
            return 2;
        }
        nspin = ncpus - 2;
        run_ipi(seconds);
    }
    else if (strcmp(kind, "tlb") == 0 || strcmp(kind, "tlb-sleep") == 0)
        run_tlb(seconds);
    else if (strcmp(kind, "ebizzy") == 0)
        run_ebizzy(seconds);
    else if (strcmp(kind, "pingpong") == 0)
        run_pingpong(seconds);
    else if (strcmp(kind, "idle") == 0)
        run_idle(seconds);
    else {
        fprintf(stderr, "pv-load: unknown kind '%s' (ipi, ipi-mask, tlb, tlb-sleep, ebizzy, "
                        "pingpong, idle, vmcall)\n",
                kind);
        return 2;
    }
    return 0;
}
