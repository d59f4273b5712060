// netns-pool: what a pool of network namespaces made in advance would save a sandbox's start
// (issue 19's lever). Each job is the floor's work (../shared/bench/floor.c: new user, pid,
// mount, uts, ipc, cgroup and time namespaces, a bind of ROOTFS, /proc, pivot_root, exec CMD,
// wait), either with a fresh network namespace (as floor.c) or joining one made before the
// timing started and never used again. Fresh and pooled jobs alternate, so the machine's drift
// falls on both. Prints the median and mean start-to-exit time of each, in ms, and what making
// one pooled namespace took.
//
//   cc -O2 -o netns-pool benches/netns-pool.c && ./netns-pool ROOTFS JOBS CMD...   (as root)
//
// The pooled namespace belongs to the initial user namespace (it was made before the job's own
// user namespace): the job cannot administer it or mount a sysfs for it, which is why cagette
// does not do this (benches/README.md, "Network namespaces made in advance").
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "floor-steps.h"
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif


static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

// One job, in a forked process: the floor's steps; with net_fd >= 0, joins that network
// namespace first instead of making one.
static int job(int net_fd, char **argv) {
  pid_t p = fork();
  if (p < 0) die("fork");
  if (p == 0) {
    int flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP | CLONE_NEWPID | CLONE_NEWTIME;
    if (net_fd >= 0) {
      if (setns(net_fd, CLONE_NEWNET) < 0) die("setns");
    } else {
      flags |= CLONE_NEWNET;
    }
    unshare_mapped(flags);
    pid_t c = fork();
    if (c < 0) die("fork");
    if (c == 0) {
      enter_root(argv[1]);
      pivot_here();
      execv(argv[3], argv + 3);
      die("exec");
    }
    int st;
    if (waitpid(c, &st, 0) < 0) die("waitpid");
    _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
  }
  int st;
  if (waitpid(p, &st, 0) < 0) die("waitpid");
  return st;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void report(const char *name, double *v, int n) {
  double sum = 0;
  for (int i = 0; i < n; i++) sum += v[i];
  qsort(v, n, sizeof *v, cmp);
  printf("%-32s median %.3f ms  mean %.3f ms  (%d jobs)\n", name, v[n / 2], sum / n, n);
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: netns-pool ROOTFS JOBS CMD...\n");
    return 2;
  }
  int n = atoi(argv[2]);
  if (n < 1 || n > 5000) {
    fprintf(stderr, "JOBS: 1 to 5000\n");
    return 2;
  }
  int *pool = calloc(n, sizeof *pool);
  double *fresh = calloc(n, sizeof *fresh), *pooled = calloc(n, sizeof *pooled);
  if (!pool || !fresh || !pooled) die("calloc");
  // The pool: made before the timing, one namespace per pooled job, held by a descriptor.
  int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  if (home < 0) die("open /proc/self/ns/net");
  double made = now_ms();
  for (int i = 0; i < n; i++) {
    if (unshare(CLONE_NEWNET) < 0) die("unshare(CLONE_NEWNET) for the pool");
    pool[i] = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (pool[i] < 0) die("open the pooled namespace");
    if (setns(home, CLONE_NEWNET) < 0) die("setns home");
  }
  made = (now_ms() - made) / n;
  for (int i = 0; i < 20; i++) job(-1, argv); // warm-up
  for (int i = 0; i < n; i++) {
    double t = now_ms();
    int st = job(-1, argv);
    fresh[i] = now_ms() - t;
    t = now_ms();
    int st2 = job(pool[i], argv);
    pooled[i] = now_ms() - t;
    close(pool[i]);
    if (st != 0 || st2 != 0) {
      fprintf(stderr, "a job failed: status %d / %d\n", st, st2);
      return 1;
    }
  }
  report("fresh network namespace", fresh, n);
  report("network namespace from a pool", pooled, n);
  printf("%-32s %.3f ms each, before the timing\n", "making the pool", made);
  return 0;
}
