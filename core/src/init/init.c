/*
 * cagette-init: the tiny pid 1 of a sandbox.
 *
 * Built freestanding (no libc) by core/build.rs and embedded in the library. The setup child
 * executes it from a sealed memfd right after the payload has exec'd, so the long-lived process in
 * the sandbox never shares the host's address space. Contract (see core/src/exec.rs):
 *
 *   argv[1]  the payload's pid (in the sandbox's pid namespace), decimal
 *   fd 3     a stream socket to the host: the payload's wait status (4 bytes, native endian) is
 *            written there when the payload ends; end-of-file or hang-up on it means the host
 *            died, and the whole sandbox is killed. The host may send 'K': kill everything,
 *            reap it all (so its CPU time is accounted to init), and exit 0.
 *   signals  all blocked on entry (inherited); SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2,
 *            SIGWINCH and SIGCONT are forwarded to the payload; orphans are reaped.
 *
 * When the payload ends, init writes its status and exits; as pid 1 of a pid namespace its exit
 * makes the kernel kill everything left in the namespace.
 */

typedef unsigned long u64;
typedef unsigned int u32;

#if defined(__x86_64__)
#define NR_read 0
#define NR_write 1
#define NR_close 3
#define NR_rt_sigprocmask 14
#define NR_getpid 39
#define NR_wait4 61
#define NR_kill 62
#define NR_prctl 157
#define NR_exit_group 231
#define NR_ppoll 271
#define NR_signalfd4 289
static long sc(long n, long a, long b, long c, long d, long e) {
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
                     : "rcx", "r11", "memory");
    return ret;
}
__asm__(".text\n.global _start\n_start:\n"
        "  xor %rbp, %rbp\n  mov %rsp, %rdi\n  and $-16, %rsp\n  call cmain\n  hlt\n");
#elif defined(__aarch64__)
#define NR_read 63
#define NR_write 64
#define NR_close 57
#define NR_rt_sigprocmask 135
#define NR_getpid 172
#define NR_wait4 260
#define NR_kill 129
#define NR_prctl 167
#define NR_exit_group 94
#define NR_ppoll 73
#define NR_signalfd4 74
static long sc(long n, long a, long b, long c, long d, long e) {
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    __asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4) : "memory");
    return x0;
}
__asm__(".text\n.global _start\n_start:\n  mov x0, sp\n  bl cmain\n  brk #0\n");
#else
#error "cagette-init: unsupported architecture"
#endif

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
#define WNOHANG 1
#define WALL 0x40000000
#define POLLIN 1
#define POLLERR 8
#define POLLHUP 16
#define SFD_NONBLOCK 04000
#define SFD_CLOEXEC 02000000
#define PR_SET_CHILD_SUBREAPER 36
#define EINTR 4
#define EAGAIN 11
#define STATUS_FD 3

struct pollfd {
    int fd;
    short events;
    short revents;
};

#define BIT(s) (1UL << ((s) - 1))

static __attribute__((noreturn)) void die(int code) {
    for (;;) sc(NR_exit_group, code, 0, 0, 0, 0);
}

static long parse_pid(const char *s) {
    long v = 0;
    if (!s || !*s) return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > 100000000) return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

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
static void kill_and_reap(long payload, int pid1) {
    int st;
    for (;;) {
        kill_all(payload, pid1);
        long pid = sc(NR_wait4, -1, (long)&st, WALL, 0, 0);
        if (pid == -EINTR) continue;
        if (pid < 0) return; /* ECHILD: nothing left */
    }
}

__attribute__((used)) void cmain(long *sp) {
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    long payload = argc > 1 ? parse_pid(argv[1]) : -1;
    int pid1 = sc(NR_getpid, 0, 0, 0, 0, 0) == 1;
    u64 all = ~0UL;
    u64 watched = BIT(SIGCHLD) | BIT(SIGTERM) | BIT(SIGINT) | BIT(SIGHUP) | BIT(SIGQUIT) |
                  BIT(SIGUSR1) | BIT(SIGUSR2) | BIT(SIGWINCH) | BIT(SIGCONT);
    struct pollfd fds[2];
    int status = 0;
    long sfd;

    if (payload <= 0) die(125);
    sc(NR_rt_sigprocmask, SIG_BLOCK, (long)&all, 0, 8, 0);
    if (!pid1) sc(NR_prctl, PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    sfd = sc(NR_signalfd4, -1, (long)&watched, 8, SFD_NONBLOCK | SFD_CLOEXEC, 0);
    if (sfd < 0) {
        kill_all(payload, pid1);
        die(125);
    }
    fds[0].fd = (int)sfd;
    fds[0].events = POLLIN;
    fds[1].fd = STATUS_FD;
    fds[1].events = POLLIN;

    for (;;) {
        if (reap(payload, &status)) {
            long n;
            do n = sc(NR_write, STATUS_FD, (long)&status, 4, 0, 0);
            while (n == -EINTR);
            die(0);
        }
        fds[0].revents = fds[1].revents = 0;
        long r = sc(NR_ppoll, (long)fds, 2, 0, 0, 8);
        if (r == -EINTR) continue;
        if (r >= 0 && (fds[1].revents & POLLIN)) {
            char cmd = 0;
            long n = sc(NR_read, STATUS_FD, (long)&cmd, 1, 0, 0);
            if (n == 1 && cmd == 'K') {
                kill_and_reap(payload, pid1);
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
