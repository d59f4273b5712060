// netns-parallel: whether making a job's network namespace in parallel with its mount work
// shortens the start (issue 19's lever). One job, the floor's steps (../shared/bench/floor.c:
// new user, pid, mount, uts, ipc and cgroup namespaces, a bind of ROOTFS, /proc, pivot_root,
// exec CMD, wait) plus MOUNTS tmpfs mounts standing for a sandbox's /dev, /tmp and masks, then
// a sysfs (which must see the final network namespace), with `lo` up. MODE says where the
// network namespace comes from:
//
//   seq  made with the other namespaces (as floor.c and cagette do), `lo` brought up after;
//   par  the job's process starts a helper (sharing its memory, in the job's user namespace,
//        so the namespace belongs to the job) that makes it and brings `lo` up while the job
//        mounts; the job joins it (setns through the helper's pidfd) before the sysfs.
//
//   cc -O2 -static -o netns-parallel benches/netns-parallel.c
//   ./netns-parallel MODE MOUNTS ROOTFS CMD...     (as root; time it whole, e.g. seq vs par
//                                                   in paired runs, A B A B)
#define _GNU_SOURCE
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "floor-steps.h"


static void lo_up(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct ifreq r;
  memset(&r, 0, sizeof r);
  strcpy(r.ifr_name, "lo");
  if (s < 0 || ioctl(s, SIOCGIFFLAGS, &r) < 0) die("lo flags");
  r.ifr_flags |= IFF_UP;
  if (ioctl(s, SIOCSIFFLAGS, &r) < 0) die("lo up");
  close(s);
}

static int ready[2];
static char helper_stack[64 * 1024];

// The helper: a network namespace of the job's user namespace, `lo` up, then it says so and
// waits to be killed (its namespace lives while the helper does, until the job joins it).
static int helper(void *arg) {
  (void)arg;
  if (unshare(CLONE_NEWNET) < 0) die("unshare(CLONE_NEWNET)");
  lo_up();
  char c = 1;
  if (write(ready[1], &c, 1) != 1) die("ready");
  for (;;) pause();
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 5 || (strcmp(argv[1], "seq") && strcmp(argv[1], "par"))) {
    fprintf(stderr, "usage: netns-parallel seq|par MOUNTS ROOTFS CMD...\n");
    return 2;
  }
  int par = !strcmp(argv[1], "par");
  int mounts = atoi(argv[2]);
  const char *root = argv[3];
  int flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP | CLONE_NEWPID;
  if (!par) flags |= CLONE_NEWNET;
  unshare_mapped(flags);
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    int pidfd = -1;
    pid_t h = 0;
    if (par) {
      if (pipe2(ready, O_CLOEXEC) < 0) die("pipe");
      h = clone(helper, helper_stack + sizeof helper_stack, CLONE_VM | CLONE_PIDFD | SIGCHLD, NULL, &pidfd);
      if (h < 0) die("clone");
    } else {
      lo_up();
    }
    enter_root(root);
    for (int i = 0; i < mounts; i++)
      if (mount("tmpfs", "tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=64k") < 0) die("tmpfs");
    if (par) {
      char c;
      if (read(ready[0], &c, 1) != 1) die("wait for the helper");
      if (setns(pidfd, CLONE_NEWNET) < 0) die("setns");
      kill(h, SIGKILL);
      if (waitpid(h, NULL, 0) < 0) die("reap the helper");
    }
    if (mount("sysfs", "sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, NULL) < 0) die("sysfs");
    pivot_here();
    execv(argv[4], argv + 4);
    perror("exec");
    _exit(127);
  }
  int st;
  if (waitpid(pid, &st, 0) < 0) die("waitpid");
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
