// umount-overlap: whether the wait in unmounting the host's old root after pivot_root can be
// taken off a start's critical path. Detaching the old root (umount2 MNT_DETACH) returns only
// after an RCU grace period (the kernel's namespace_unlock: synchronize_rcu_expedited), though
// the mounts are gone from the namespace before that wait. One job, the floor's steps
// (../shared/bench/floor.c: new user, pid, mount, uts, ipc, net and cgroup namespaces, a bind of
// ROOTFS, /proc, pivot_root, exec, wait), shaped like a cagette start: the job's first
// process sets up the root, then execs an init (this program, through an fd opened before the
// pivot, as cagette's init is a memfd), which forks CMD and waits for it. MODE says who
// detaches the old root:
//
//   seq  the job's process, before it execs the init (as floor.c and cagette do);
//   par  a helper the job's process starts right after pivot_root (sharing its memory, as
//        cagette's setup child shares the host's); the job's process execs the init at once,
//        and the init waits for the helper (its child: same pid 1) before it forks CMD.
//
//   cc -O2 -static -o umount-overlap benches/umount-overlap.c
//   ./umount-overlap MODE ROOTFS CMD...     (as root; time it whole, e.g. seq vs par in
//                                            paired runs, A B A B)
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "floor-steps.h"

static char helper_stack[64 * 1024];

static int helper(void *arg) {
  (void)arg;
  if (umount2(".", MNT_DETACH) < 0) die("umount the old root");
  _exit(0);
}

// The init: wait for the helper if there is one (ECHILD if not), then fork CMD and wait.
static int init(char **cmd) {
  int st;
  pid_t h = waitpid(-1, &st, __WALL);
  if (h < 0 && errno != ECHILD) die("wait for the helper");
  if (h > 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) return 125;
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    execv(cmd[0], cmd);
    perror("exec");
    _exit(127);
  }
  if (waitpid(pid, &st, 0) < 0) die("waitpid");
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(int argc, char **argv) {
  if (argc >= 3 && !strcmp(argv[1], "init")) return init(argv + 2);
  if (argc < 4 || (strcmp(argv[1], "seq") && strcmp(argv[1], "par"))) {
    fprintf(stderr, "usage: umount-overlap seq|par ROOTFS CMD...\n");
    return 2;
  }
  int par = !strcmp(argv[1], "par");
  const char *root = argv[2];
  int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  if (self < 0) die("/proc/self/exe");
  unshare_mapped(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWCGROUP | CLONE_NEWPID);
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    enter_root(root);
    if (syscall(SYS_pivot_root, ".", ".") < 0) die("pivot_root");
    if (par) {
      if (clone(helper, helper_stack + sizeof helper_stack, CLONE_VM | SIGCHLD, NULL) < 0) die("clone");
    } else if (umount2(".", MNT_DETACH) < 0) {
      die("umount the old root");
    }
    argv[1] = "init";
    argv[2] = "init";
    char *env[] = {NULL};
    syscall(SYS_execveat, self, "", argv + 1, env, AT_EMPTY_PATH);
    perror("exec the init");
    _exit(127);
  }
  int st;
  if (waitpid(pid, &st, 0) < 0) die("waitpid");
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
