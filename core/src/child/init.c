/*
 * cagette-init: the tiny pid 1 of a sandbox, and the process that starts the payload.
 *
 * Built freestanding (no libc) by core/build.rs and embedded in the library. The setup child
 * executes it from a sealed memfd once the sandbox is built (namespaces, mounts, root). From then
 * on no process of the sandbox shares the host's address space: init starts the payload from its
 * own small one (on x86_64 a vfork-like clone: the payload shares init's few pages only until it
 * executes), so the payload's memory accounting (cgroup, rusage) is its own, and an OOM kill in
 * the job can never pick a process that shares the host's memory. Contract (core/src/exec.rs):
 *
 *   fd 3     a stream socket to the host. When the payload ends, init kills and reaps whatever is
 *            left in the sandbox (pid namespace), then writes one 32-byte record: the payload's
 *            wait status (i32), flags (u32: bit 0 = the status is valid), and the user and system
 *            CPU microseconds and the peak RSS (KiB) of every process init reaped (i64 each).
 *            End-of-file or hang-up on it means the host died: the whole sandbox is killed. The
 *            host may send 'K': kill everything, reap it all, write the record, and exit 0.
 *            With the plan's flag DETACHED (an OCI runtime's container, which outlives the
 *            process that made it) there is no host: init ignores fd 3 (or, with WAIT_START,
 *            reads one byte from it first, see below) and, once the payload and everything
 *            left in the sandbox are reaped, exits with the payload's exit code (128 + the
 *            signal's number when a signal ended it), as runc's container process would.
 *            With WAIT_START, fd 3 is the container's start FIFO (opened read-write): init
 *            writes a READY record (phase 3) to fd 5, so the host knows the sandbox is built,
 *            and blocks until `start` writes a byte to the FIFO; then it forks the payload.
 *   fd 5     the setup error pipe: a failure before the payload's exec is written there as one
 *            12-byte record (phase u32, index u32, errno i32); phase 1 = payload op `index`,
 *            phase 2 = init itself (index 0: read the payload plan, 1: fork).
 *   fd 6     the payload plan (a memfd; format below), read once.
 *   fd 7     with the plan's flag OOM_WATCH: an eventfd signalled when the job's memory cgroup
 *            (cgroup v1) hits an OOM; the whole sandbox is then killed and reaped, and the
 *            record says so (flags bit 1). (v2 has memory.oom.group in the kernel.)
 *   fd 8...  the descriptors the payload gets (its standard streams, passed fds), named by the
 *            plan's FDS operation.
 *   signals  all blocked on entry (inherited); SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2,
 *            SIGWINCH and SIGCONT are forwarded to the payload; orphans are reaped.
 *
 * The payload plan: u64 words. Header: magic, total size, number of operations, offset of the
 * operations, flags. Each operation is five u64: code and four arguments; strings and arrays are given as
 * offsets from the start of the plan (arrays of strings are arrays of u64 offsets, 0-terminated
 * where noted). The child runs them in order; the last is EXEC.
 */

typedef unsigned long u64;
typedef long i64;
typedef unsigned int u32;
typedef unsigned short u16;

#if defined(__x86_64__)
#define NR_read 0
#define NR_umask 95
#define NR_write 1
#define NR_close 3
#define NR_fstat 5
#define NR_mmap 9
#define NR_munmap 11
#define NR_rt_sigprocmask 14
#define NR_ioctl 16
#define NR_getpid 39
#define NR_clone 56
#define NR_execve 59
#define NR_exit 60
#define NR_wait4 61
#define NR_kill 62
#define NR_fcntl 72
#define NR_chdir 80
#define NR_getrusage 98
#define NR_setsid 112
#define NR_setgroups 116
#define NR_setresuid 117
#define NR_setresgid 119
#define NR_capget 125
#define NR_capset 126
#define NR_prctl 157
#define NR_exit_group 231
#define NR_ppoll 271
#define NR_signalfd4 289
#define NR_dup3 292
#define NR_seccomp 317
#define NR_close_range 436
#define NR_landlock_create_ruleset 444
#define NR_landlock_add_rule 445
#define NR_landlock_restrict_self 446
#define NR_openat 257
static long sc6(long n, long a, long b, long c, long d, long e, long f) {
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
__asm__(".text\n.global _start\n_start:\n"
        "  xor %rbp, %rbp\n  mov %rsp, %rdi\n  and $-16, %rsp\n  call cmain\n  hlt\n");
#define CLONE_VM 0x100
#define CLONE_VFORK 0x4000
/* Runs fn(arg) in a child that shares this process's memory until it executes or exits
 * (CLONE_VM | CLONE_VFORK: this process sleeps until then), on the stack given: no page tables
 * are copied and nothing is copied on write afterwards, which a fork costs (a static C fork,
 * exit and wait take ~100 us on the project's VM, ~31 us this way). fn must not return. The
 * child gets its own fds, credentials, signal mask and seccomp filter as after a fork. */
static long spawn_shared(void (*fn)(void *), void *arg, void *stack_top) {
    register long r10 __asm__("r10") = 0;
    register long r8 __asm__("r8") = 0;
    long ret;
    __asm__ volatile("syscall\n\t"
                     "test %%rax, %%rax\n\t"
                     "jnz 1f\n\t"
                     "xor %%ebp, %%ebp\n\t"
                     "mov %[arg], %%rdi\n\t"
                     "call *%[fn]\n\t"
                     "hlt\n"
                     "1:"
                     : "=a"(ret)
                     : "a"(NR_clone), "D"(CLONE_VM | CLONE_VFORK | 17 /* SIGCHLD */), "S"(stack_top), "d"(0), "r"(r10), "r"(r8),
                       [fn] "r"(fn), [arg] "r"(arg)
                     : "rcx", "r11", "memory");
    return ret;
}
#define HAVE_SPAWN_SHARED 1
#elif defined(__aarch64__)
#define NR_read 63
#define NR_umask 166
#define NR_write 64
#define NR_close 57
#define NR_fstat 80
#define NR_mmap 222
#define NR_munmap 215
#define NR_rt_sigprocmask 135
#define NR_ioctl 29
#define NR_getpid 172
#define NR_clone 220
#define NR_execve 221
#define NR_exit 93
#define NR_wait4 260
#define NR_kill 129
#define NR_fcntl 25
#define NR_chdir 49
#define NR_getrusage 165
#define NR_setsid 157
#define NR_setgroups 159
#define NR_setresuid 147
#define NR_setresgid 149
#define NR_capget 90
#define NR_capset 91
#define NR_prctl 167
#define NR_exit_group 94
#define NR_ppoll 73
#define NR_signalfd4 74
#define NR_dup3 24
#define NR_seccomp 277
#define NR_close_range 436
#define NR_landlock_create_ruleset 444
#define NR_landlock_add_rule 445
#define NR_landlock_restrict_self 446
#define NR_openat 56
static long sc6(long n, long a, long b, long c, long d, long e, long f) {
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    __asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
    return x0;
}
__asm__(".text\n.global _start\n_start:\n  mov x0, sp\n  bl cmain\n  brk #0\n");
#else
#error "cagette-init: unsupported architecture"
#endif
#define sc(n, a, b, c, d, e) sc6(n, a, b, c, d, e, 0)

#define SIGHUP 1
#define SIGINT 2
#define SIGQUIT 3
#define SIGKILL 9
#define SIGUSR1 10
#define SIGUSR2 12
#define SIGTERM 15
#define SIGCHLD 17
#define SIGCONT 18
#define SIGWINCH 28
#define SIG_BLOCK 0
#define SIG_SETMASK 2
#define WNOHANG 1
#define WALL 0x40000000
#define POLLIN 1
#define POLLERR 8
#define POLLHUP 16
#define SFD_NONBLOCK 04000
#define SFD_CLOEXEC 02000000
#define PR_SET_PDEATHSIG 1
#define PR_SET_KEEPCAPS 8
#define PR_CAPBSET_DROP 24
#define PR_SET_NO_NEW_PRIVS 38
#define PR_SET_CHILD_SUBREAPER 36
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#define F_DUPFD_CLOEXEC 1030
#define O_PATH 010000000
#define O_CLOEXEC 02000000
#define AT_FDCWD -100
#define PROT_READ 1
#define PROT_WRITE 2
#define MAP_PRIVATE 2
#define TIOCSCTTY 0x540E
#define EINTR 4
#define EAGAIN 11
#define ENOENT 2
#define ENOTDIR 20
#define EACCES 13
#define EINVAL 22
#define EMFILE 24
#define STATUS_FD 3
#define ERR_FD 5
#define PLAN_FD 6
#define OOM_FD 7
#define FIRST_SOURCE 8
#define PLAN_OOM_WATCH 1
#define PLAN_DETACHED 2
#define PLAN_WAIT_START 4
#define PHASE_PAYLOAD 1
#define PHASE_INIT 2
#define PHASE_READY 3
#define PLAN_MAGIC 0x444c59415054474cUL /* the first word of the plan (payload.rs) */

enum {
    OP_DEATHSIG = 1,
    OP_CHDIR,
    OP_DROP_BOUNDING,
    OP_SETGROUPS,
    OP_SETGID,
    OP_SETUID,
    OP_CAPSET,
    OP_KEEPCAPS,
    OP_AMBIENT,
    OP_SECCOMP,
    OP_LL_CREATE,
    OP_LL_RULE,
    OP_LL_RESTRICT,
    OP_NNP,
    OP_FDS,
    OP_CTTY,
    OP_UNBLOCK,
    OP_EXEC,
    OP_UMASK,
};

struct pollfd {
    int fd;
    short events;
    short revents;
};

struct op {
    u64 code, a, b, c, d;
};

struct header {
    u64 magic, size, nops, ops, flags;
};

struct timeval {
    i64 sec, usec;
};

struct rusage {
    struct timeval utime, stime;
    i64 maxrss;
    i64 rest[14];
};

#define BIT(s) (1UL << ((s) - 1))

static __attribute__((noreturn)) void die(int code) {
    for (;;) sc(NR_exit_group, code, 0, 0, 0, 0);
}

/* Writes a 12-byte failure record (phase, index, errno) to fd, whole or not at all. */
static void report(int fd, u32 phase, u32 index, long err) {
    u32 rec[3];
    rec[0] = phase;
    rec[1] = index;
    rec[2] = (u32)(int)(-err);
    long n;
    do n = sc(NR_write, fd, (long)rec, sizeof rec, 0, 0);
    while (n == -EINTR);
}

/* ---- the payload, between fork and exec ---------------------------------------------------- */

struct capheader {
    u32 version;
    int pid;
};
struct capdata {
    u32 effective, permitted, inheritable;
};
struct sock_fprog {
    u16 len;
    u16 pad[3];
    const void *filter;
};
struct ll_path_beneath {
    u64 allowed;
    int parent_fd;
} __attribute__((packed));

static long drop_bounding(u64 keep, u64 last) {
    for (u64 cap = 0; cap <= last && cap < 64; cap++) {
        if (keep & (1UL << cap)) continue;
        long r = sc(NR_prctl, PR_CAPBSET_DROP, (long)cap, 0, 0, 0);
        if (r < 0 && r != -EINVAL) return r;
    }
    return 0;
}

static long capset_keep(u64 keep, u64 inheritable) {
    struct capheader hdr = {0x20080522, 0};
    struct capdata cur[2], data[2];
    long r = sc(NR_capget, (long)&hdr, (long)cur, 0, 0, 0);
    if (r < 0) return r;
    u32 lo = (u32)keep, hi = (u32)(keep >> 32);
    data[0].effective = data[0].permitted = cur[0].permitted & lo;
    data[0].inheritable = cur[0].permitted & lo & (u32)inheritable;
    data[1].effective = data[1].permitted = cur[1].permitted & hi;
    data[1].inheritable = cur[1].permitted & hi & (u32)(inheritable >> 32);
    hdr.version = 0x20080522;
    hdr.pid = 0;
    r = sc(NR_capset, (long)&hdr, (long)data, 0, 0, 0);
    if (r < 0) return r;
    r = sc(NR_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    return r == -EINVAL ? 0 : r;
}

static long raise_ambient(u64 keep, u64 last) {
    for (u64 cap = 0; cap <= last && cap < 64; cap++) {
        if (!(keep & (1UL << cap))) continue;
        long r = sc(NR_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, (long)cap, 0, 0);
        if (r < 0) return r;
    }
    return 0;
}

/*
 * Puts every (source, target) pair in place without one clobbering another, closes the gaps
 * between targets and everything above them, and keeps a close-on-exec copy of the error pipe
 * (returned through *err) for a failure after this point.
 */
static long shuffle_fds(const int *moves, u64 n, int *err) {
    int high = ERR_FD;
    int tmp[64];
    u64 i;
    if (n > 64) return -EMFILE;
    int max_target = 2;
    for (i = 0; i < n; i++) {
        if (moves[2 * i] > high) high = moves[2 * i];
        if (moves[2 * i + 1] > high) high = moves[2 * i + 1];
        if (moves[2 * i + 1] > max_target) max_target = moves[2 * i + 1];
    }
    high += 1;
    long e = sc(NR_fcntl, *err, F_DUPFD_CLOEXEC, high, 0, 0);
    if (e < 0) return e;
    *err = (int)e;
    for (i = 0; i < n; i++) {
        long t = sc(NR_fcntl, moves[2 * i], F_DUPFD_CLOEXEC, high, 0, 0);
        if (t < 0) return t;
        tmp[i] = (int)t;
    }
    for (i = 0; i < n; i++) {
        long r = sc(NR_dup3, tmp[i], moves[2 * i + 1], 0, 0, 0);
        if (r < 0) return r;
    }
    /* Close every fd below max_target that is not a target, and everything above it but err. */
    for (int fd = 0; fd <= max_target; fd++) {
        int is_target = 0;
        for (i = 0; i < n; i++)
            if (moves[2 * i + 1] == fd) is_target = 1;
        if (!is_target) sc(NR_close, fd, 0, 0, 0, 0);
    }
    if (*err > max_target + 1) {
        long r = sc(NR_close_range, max_target + 1, *err - 1, 0, 0, 0);
        if (r < 0) return r;
    }
    return sc(NR_close_range, *err + 1, ~0U, 0, 0, 0);
}

static long run_op(char *base, const struct op *o, int *err) {
    switch (o->code) {
    case OP_DEATHSIG:
        return sc(NR_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    case OP_CHDIR:
        return sc(NR_chdir, (long)(base + o->a), 0, 0, 0, 0);
    case OP_DROP_BOUNDING:
        return drop_bounding(o->a, o->b);
    case OP_SETGROUPS:
        return sc(NR_setgroups, (long)o->b, (long)(base + o->a), 0, 0, 0);
    case OP_SETGID:
        return sc(NR_setresgid, (long)o->a, (long)o->a, (long)o->a, 0, 0);
    case OP_SETUID:
        return sc(NR_setresuid, (long)o->a, (long)o->a, (long)o->a, 0, 0);
    case OP_CAPSET:
        return capset_keep(o->a, o->b);
    case OP_KEEPCAPS:
        return sc(NR_prctl, PR_SET_KEEPCAPS, 1, 0, 0, 0);
    case OP_AMBIENT:
        return raise_ambient(o->a, o->b);
    case OP_SECCOMP: {
        struct sock_fprog prog;
        prog.len = (u16)o->b;
        prog.pad[0] = prog.pad[1] = prog.pad[2] = 0;
        prog.filter = base + o->a;
        return sc(NR_seccomp, 1 /* SECCOMP_SET_MODE_FILTER */, 0, (long)&prog, 0, 0);
    }
    case OP_LL_CREATE: {
        u64 handled = o->a;
        long fd = sc(NR_landlock_create_ruleset, (long)&handled, 8, 0, 0, 0);
        if (fd < 0) return fd;
        /* Kept in the operation's spare argument for the rules and the restriction. */
        ((struct op *)o)->d = (u64)fd;
        return 0;
    }
    case OP_LL_RULE: {
        long fd = sc(NR_openat, AT_FDCWD, (long)(base + o->a), O_PATH | O_CLOEXEC, 0, 0);
        if (fd < 0) return fd;
        struct ll_path_beneath attr;
        attr.allowed = o->b;
        attr.parent_fd = (int)fd;
        long r = sc(NR_landlock_add_rule, (long)o->c, 1 /* PATH_BENEATH */, (long)&attr, 0, 0);
        sc(NR_close, fd, 0, 0, 0, 0);
        return r;
    }
    case OP_LL_RESTRICT: {
        long r = sc(NR_landlock_restrict_self, (long)o->a, 0, 0, 0, 0);
        sc(NR_close, (long)o->a, 0, 0, 0, 0);
        return r;
    }
    case OP_NNP:
        return sc(NR_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    case OP_FDS:
        return shuffle_fds((const int *)(base + o->a), o->b, err);
    case OP_CTTY: {
        long r = sc(NR_setsid, 0, 0, 0, 0, 0);
        if (r < 0) return r;
        return sc(NR_ioctl, 0, TIOCSCTTY, 0, 0, 0);
    }
    case OP_UMASK:
        sc(NR_umask, (long)o->a, 0, 0, 0, 0);
        return 0;
    case OP_UNBLOCK: {
        u64 empty = 0;
        return sc(NR_rt_sigprocmask, SIG_SETMASK, (long)&empty, 0, 8, 0);
    }
    case OP_EXEC: {
        u64 *cands = (u64 *)(base + o->a);
        u64 *argv = (u64 *)(base + o->c);
        u64 *envp = (u64 *)(base + o->d);
        /* Offsets to pointers, in place: init does not read the plan's argv or envp again. */
        for (u64 *p = argv; *p; p++) *p = (u64)(base + *p);
        for (u64 *p = envp; *p; p++) *p = (u64)(base + *p);
        long first = -ENOENT;
        int eacces = 0;
        for (u64 i = 0; i < o->b; i++) {
            long r = sc(NR_execve, (long)(base + cands[i]), (long)argv, (long)envp, 0, 0);
            if (r == -EACCES) {
                eacces = 1;
            } else if (r != -ENOENT && r != -ENOTDIR) {
                return r;
            }
        }
        return eacces ? -EACCES : first;
    }
    }
    return -EINVAL;
}

static __attribute__((noreturn)) void payload_main(char *base, const struct header *h) {
    int err = ERR_FD;
    struct op *ops = (struct op *)(base + h->ops);
    long ll_fd = -1;
    for (u64 i = 0; i < h->nops; i++) {
        /* The Landlock ruleset fd travels from the create operation to the later ones. */
        if (ops[i].code == OP_LL_RULE) ops[i].c = (u64)ll_fd;
        if (ops[i].code == OP_LL_RESTRICT) ops[i].a = (u64)ll_fd;
        long r = run_op(base, &ops[i], &err);
        if (ops[i].code == OP_LL_CREATE && r == 0) ll_fd = (long)ops[i].d;
        if (r < 0) {
            report(err, PHASE_PAYLOAD, (u32)i, r);
            for (;;) sc(NR_exit, 127, 0, 0, 0, 0);
        }
    }
    report(err, PHASE_PAYLOAD, (u32)h->nops, -EINVAL);
    for (;;) sc(NR_exit, 127, 0, 0, 0, 0);
}

#ifdef HAVE_SPAWN_SHARED
struct payload_args {
    char *base;
    const struct header *h;
};
static __attribute__((noreturn)) void payload_entry(void *p) {
    struct payload_args *a = p;
    payload_main(a->base, a->h);
}
/* The payload's stack between clone and exec (its pages are touched only as it grows). */
static char payload_stack[64 * 1024] __attribute__((aligned(16)));
#endif

/* Maps the payload plan; NULL on failure (reported). */
static char *map_plan(void) {
    long st[18]; /* struct stat: 144 bytes on x86_64 and aarch64; st_size at byte 48 */
    long r = sc(NR_fstat, PLAN_FD, (long)st, 0, 0, 0);
    if (r < 0) {
        report(ERR_FD, PHASE_INIT, 0, r);
        return 0;
    }
    long size = st[6];
    if (size < (long)sizeof(struct header)) {
        report(ERR_FD, PHASE_INIT, 0, -EINVAL);
        return 0;
    }
    long m = sc6(NR_mmap, 0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, PLAN_FD, 0);
    if (m < 0 && m > -4096) {
        report(ERR_FD, PHASE_INIT, 0, m);
        return 0;
    }
    struct header *h = (struct header *)m;
    if (h->magic != PLAN_MAGIC || h->size != (u64)size || h->ops + h->nops * sizeof(struct op) > (u64)size) {
        report(ERR_FD, PHASE_INIT, 0, -EINVAL);
        return 0;
    }
    return (char *)m;
}

/* ---- init proper ---------------------------------------------------------------------------- */

/* Reaps every child that has ended; returns 1 and sets *status when the payload is among them. */
static int reap(long payload, int *status) {
    int found = 0;
    for (;;) {
        int st = 0;
        long pid = sc(NR_wait4, -1, (long)&st, WNOHANG | WALL, 0, 0);
        if (pid == -EINTR) continue;
        if (pid <= 0) return found;
        if (pid == payload) {
            *status = st;
            found = 1;
        }
    }
}

static void kill_all(long payload, int pid1) {
    if (pid1)
        sc(NR_kill, -1, SIGKILL, 0, 0, 0); /* everything in our pid namespace but us */
    else if (payload > 0)
        sc(NR_kill, payload, SIGKILL, 0, 0, 0);
}

/* Kills every process of the sandbox and reaps them all, so that their usage is accounted. */
static void kill_and_reap(long payload, int pid1, int *status, int *have) {
    for (;;) {
        int st = 0;
        kill_all(*have ? -1 : payload, pid1);
        long pid = sc(NR_wait4, -1, (long)&st, WALL, 0, 0);
        if (pid == -EINTR) continue;
        if (pid < 0) return; /* ECHILD: nothing left */
        if (pid == payload && !*have) {
            *status = st;
            *have = 1;
        }
    }
}

/* A wait status as an exit code: the code, or 128 + the signal's number. */
static int exit_code(int status) {
    if ((status & 0x7f) == 0) return (status >> 8) & 0xff;
    return 128 + (status & 0x7f);
}

/* Writes the end-of-job record (see the contract above). */
static void send_record(int status, int have, int oom) {
    struct rusage ru;
    i64 rec[4];
    for (int i = 0; i < (int)(sizeof ru / sizeof(i64)); i++) ((i64 *)&ru)[i] = 0;
    sc(NR_getrusage, -1 /* RUSAGE_CHILDREN */, (long)&ru, 0, 0, 0);
    rec[0] = (i64)(u32)status | ((i64)(have ? 1 : 0) << 32) | ((i64)(oom ? 1 : 0) << 33);
    rec[1] = ru.utime.sec * 1000000 + ru.utime.usec;
    rec[2] = ru.stime.sec * 1000000 + ru.stime.usec;
    rec[3] = ru.maxrss;
    long off = 0;
    while (off < (long)sizeof rec) {
        long n = sc(NR_write, STATUS_FD, (long)rec + off, (long)sizeof rec - off, 0, 0);
        if (n == -EINTR) continue;
        if (n <= 0) return;
        off += n;
    }
}

__attribute__((used)) void cmain(long *sp) {
    (void)sp;
    int pid1 = sc(NR_getpid, 0, 0, 0, 0, 0) == 1;
    u64 all = ~0UL;
    u64 watched = BIT(SIGCHLD) | BIT(SIGTERM) | BIT(SIGINT) | BIT(SIGHUP) | BIT(SIGQUIT) |
                  BIT(SIGUSR1) | BIT(SIGUSR2) | BIT(SIGWINCH) | BIT(SIGCONT);
    struct pollfd fds[3];
    int status = 0, have = 0, nfds = 2;
    long sfd;

    sc(NR_rt_sigprocmask, SIG_BLOCK, (long)&all, 0, 8, 0);
    if (!pid1) sc(NR_prctl, PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);

    char *plan = map_plan();
    if (!plan) die(125);
    const struct header *h = (const struct header *)plan;
    int oom_watch = (h->flags & PLAN_OOM_WATCH) != 0;
    int detached = (h->flags & PLAN_DETACHED) != 0;
    if (h->flags & PLAN_WAIT_START) {
        /* Built: tell the host, then wait for `start` (signals stay blocked: a SIGKILL still
         * ends the waiting container). */
        report(ERR_FD, PHASE_READY, 0, 0);
        for (;;) {
            char b;
            long n = sc(NR_read, STATUS_FD, (long)&b, 1, 0, 0);
            if (n == 1) break;
            if (n == -EINTR || n == -EAGAIN) continue;
            die(125);
        }
    }
    if (detached) sc(NR_close, STATUS_FD, 0, 0, 0, 0);
#ifdef HAVE_SPAWN_SHARED
    /* The child writes into the plan (argv pointers, Landlock's fd) and reads `pa` on this
     * stack: both stay put, this process waiting until the payload executes or exits. */
    struct payload_args pa = {plan, h};
    long payload = spawn_shared(payload_entry, &pa, payload_stack + sizeof payload_stack);
    if (payload == -EINVAL) {
        /* Refused by kernels that keep this process outside the time namespace its children
         * get (copy_process will not share memory across time namespaces; seen on Debian's
         * 6.1): a plain fork then. */
        payload = sc(NR_clone, SIGCHLD, 0, 0, 0, 0);
        if (payload == 0) payload_main(plan, h);
    }
#else
    long payload = sc(NR_clone, SIGCHLD, 0, 0, 0, 0);
    if (payload == 0) payload_main(plan, h);
#endif
    if (payload < 0) {
        report(ERR_FD, PHASE_INIT, 1, payload);
        die(125);
    }
    /* The payload has its own copies: init keeps none of its descriptors, nor the error pipe. */
    sc(NR_munmap, (long)plan, (long)h->size, 0, 0, 0);
    sc(NR_close, ERR_FD, 0, 0, 0, 0);
    sc(NR_close, PLAN_FD, 0, 0, 0, 0);
    sc(NR_close_range, FIRST_SOURCE, ~0U, 0, 0, 0);

    sfd = sc(NR_signalfd4, -1, (long)&watched, 8, SFD_NONBLOCK | SFD_CLOEXEC, 0);
    if (sfd < 0) {
        kill_all(payload, pid1);
        die(125);
    }
    fds[0].fd = (int)sfd;
    fds[0].events = POLLIN;
    fds[1].fd = STATUS_FD;
    fds[1].events = POLLIN;
    fds[2].fd = OOM_FD;
    fds[2].events = POLLIN;
    if (oom_watch) nfds = 3;
    if (detached) fds[1].fd = -1; /* no host to watch */

    for (;;) {
        if (reap(payload, &status)) {
            have = 1;
            /* Everything left in the sandbox goes with the payload (reaped, so it is accounted). */
            if (pid1) kill_and_reap(payload, pid1, &status, &have);
            if (detached) die(exit_code(status));
            send_record(status, have, 0);
            die(0);
        }
        fds[0].revents = fds[1].revents = fds[2].revents = 0;
        long r = sc(NR_ppoll, (long)fds, nfds, 0, 0, 8);
        if (r == -EINTR) continue;
        if (r >= 0 && (fds[1].revents & POLLIN)) {
            char cmd = 0;
            long n = sc(NR_read, STATUS_FD, (long)&cmd, 1, 0, 0);
            if (n == 1 && cmd == 'K') {
                kill_and_reap(payload, pid1, &status, &have);
                send_record(status, have, 0);
                die(0);
            }
            if (n == -EINTR || n == -EAGAIN) continue;
            /* n == 0: end of file, the host is gone. */
        }
        if (r < 0 || (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            /* The host went away (or broke the protocol): take the sandbox down with it. */
            kill_all(payload, pid1);
            die(137);
        }
        if (r > 0 && oom_watch && (fds[2].revents & POLLIN)) {
            /* The kernel's OOM killer struck in the job: the whole job goes (oom_policy kill_job). */
            u64 count;
            if (sc(NR_read, OOM_FD, (long)&count, 8, 0, 0) == 8 && count > 0) {
                kill_and_reap(payload, pid1, &status, &have);
                if (detached) die(137);
                send_record(status, have, 1);
                die(0);
            }
        }
        if (fds[0].revents & POLLIN) {
            /* struct signalfd_siginfo is 128 bytes; ssi_signo is its first field. */
            u32 info[32];
            for (;;) {
                long n = sc(NR_read, sfd, (long)info, sizeof info, 0, 0);
                if (n == -EINTR) continue;
                if (n != (long)sizeof info) break;
                if (info[0] != SIGCHLD) sc(NR_kill, payload, info[0], 0, 0, 0);
            }
        }
    }
}
