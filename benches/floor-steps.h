// The floor's steps (../shared/bench/floor.c), shared by the small C benchmarks here that vary
// one of them (netns-pool.c, netns-parallel.c, umount-overlap.c). Each includes this file; it
// needs nothing else.
#ifndef CAGETTE_BENCH_FLOOR_STEPS_H
#define CAGETTE_BENCH_FLOOR_STEPS_H
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

static inline void die(const char *what) {
  perror(what);
  _exit(125);
}

static inline void put(const char *path, const char *s) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0 || write(fd, s, strlen(s)) < 0) die(path);
  close(fd);
}

// unshare(flags), which holds CLONE_NEWUSER, then map root in it to the caller's uid and gid.
static inline void unshare_mapped(int flags) {
  char map[64];
  uid_t uid = getuid();
  gid_t gid = getgid();
  if (unshare(flags) < 0) die("unshare");
  snprintf(map, sizeof map, "0 %u 1", uid);
  put("/proc/self/uid_map", map);
  put("/proc/self/setgroups", "deny");
  snprintf(map, sizeof map, "0 %u 1", gid);
  put("/proc/self/gid_map", map);
}

// In the new mount namespace: bind `root` on itself, go there, mount a fresh /proc in it.
static inline void enter_root(const char *root) {
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) die("private");
  if (mount(root, root, NULL, MS_BIND | MS_REC, NULL) < 0) die("bind");
  if (chdir(root) < 0) die("chdir");
  if (mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) die("proc");
}

// Make the current directory the root and drop the old one.
static inline void pivot_here(void) {
  if (syscall(SYS_pivot_root, ".", ".") < 0) die("pivot_root");
  if (umount2(".", MNT_DETACH) < 0) die("umount the old root");
}
#endif
