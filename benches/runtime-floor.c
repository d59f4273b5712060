// runtime-floor: the least kernel work a runtime can do to run the `crun spec` bundle of
// benches/compare-runtime.sh (root, cgroup v1 or v2), as floor.c is for `cagette run`. No
// config is read and no state is kept: only the system calls the bundle asks for.
//
//   - the job's cgroup, made and removed (v1: one directory per hierarchy, and the device rules
//     `linux.resources.devices` and the default devices ask for; v2: one directory);
//   - new pid, network, ipc, uts and mount namespaces (one clone); the host moves the child
//     into the cgroup and then lets it go on;
//   - the bundle's mounts: /proc, a /dev tmpfs with its six nodes and links, devpts, /dev/shm,
//     /dev/mqueue, a read-only sysfs, and /sys/fs/cgroup (v1: a tmpfs with the job's directory
//     of each hierarchy bound read-only, as runc and crun make it without a cgroup namespace;
//     v2: a cgroup2 mount);
//   - the masked paths (/dev/null on files, a read-only tmpfs on directories) and the
//     read-only paths, the hostname, pivot_root, the old root detached, the root read-only;
//   - the process: RLIMIT_NOFILE, the bounding set cut to the bundle's three capabilities,
//     no_new_privs, capset, exec of CMD as the namespace's pid 1 (no init of its own), and wait.
//
//   cc -O2 -static -o runtime-floor benches/runtime-floor.c
//   musl-gcc -O2 -static -o runtime-floor-musl benches/runtime-floor.c   (without glibc's start)
//   ./runtime-floor ROOTFS CMD...     (as root; time it whole, with the runtimes, in one run)
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "floor-steps.h"

#define MAX_H 16
static char hier[MAX_H][64]; // v1: the hierarchies' names under /sys/fs/cgroup; v2: none
static int nhier;
static int v2;
static char leaf[64];

static void path_of(char *out, size_t n, int h, const char *file) {
  if (v2) snprintf(out, n, "/sys/fs/cgroup/%s%s%s", leaf, file ? "/" : "", file ? file : "");
  else snprintf(out, n, "/sys/fs/cgroup/%.63s/%s%s%s", hier[h], leaf, file ? "/" : "", file ? file : "");
}

// The host's cgroup hierarchies: one cgroup2 at /sys/fs/cgroup, or v1's directories there
// (links such as cpu -> cpu,cpuacct and the empty cgroup2 of a "hybrid" host left out).
static void find_hierarchies(void) {
  struct statfs s;
  if (statfs("/sys/fs/cgroup", &s) < 0) die("statfs /sys/fs/cgroup");
  if (s.f_type == 0x63677270) { // CGROUP2_SUPER_MAGIC
    v2 = 1;
    return;
  }
  DIR *d = opendir("/sys/fs/cgroup");
  if (!d) die("/sys/fs/cgroup");
  struct dirent *e;
  while ((e = readdir(d)) && nhier < MAX_H) {
    char p[300];
    if (e->d_type != DT_DIR || e->d_name[0] == '.') continue;
    snprintf(p, sizeof p, "/sys/fs/cgroup/%s", e->d_name);
    if (statfs(p, &s) < 0 || s.f_type != 0x27e0eb) continue; // CGROUP_SUPER_MAGIC
    if (strlen(e->d_name) >= sizeof hier[0]) continue;
    memcpy(hier[nhier++], e->d_name, strlen(e->d_name) + 1);
  }
  closedir(d);
}

static void cgroups_make(void) {
  char p[400];
  for (int h = 0; h < (v2 ? 1 : nhier); h++) {
    path_of(p, sizeof p, h, NULL);
    if (mkdir(p, 0755) < 0) die(p);
    if (!v2 && strcmp(hier[h], "cpuset") == 0) {
      // A v1 cpuset takes no task before it has CPUs and memory nodes: its parent's.
      static const char *files[] = {"cpuset.cpus", "cpuset.mems"};
      for (int i = 0; i < 2; i++) {
        char from[400], v[256];
        snprintf(from, sizeof from, "/sys/fs/cgroup/%.63s/%s", hier[h], files[i]);
        int fd = open(from, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd < 0 ? -1 : read(fd, v, sizeof v - 1);
        if (n < 0) die(from);
        close(fd);
        v[n] = 0;
        path_of(p, sizeof p, h, files[i]);
        put(p, v);
      }
    }
    if (!v2 && strcmp(hier[h], "devices") == 0) {
      // Deny everything, then allow what every container gets (runc's and crun's list).
      static const char *allow[] = {"c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
                                    "c 5:0 rwm", "c 5:2 rwm", "c 136:* rwm"};
      path_of(p, sizeof p, h, "devices.deny");
      put(p, "a");
      path_of(p, sizeof p, h, "devices.allow");
      int fd = open(p, O_WRONLY | O_CLOEXEC);
      if (fd < 0) die(p);
      for (size_t i = 0; i < sizeof allow / sizeof allow[0]; i++)
        if (write(fd, allow[i], strlen(allow[i])) < 0) die("devices.allow");
      close(fd);
    }
  }
}

static void cgroups_remove(void) {
  char p[400];
  for (int h = 0; h < (v2 ? 1 : nhier); h++) {
    path_of(p, sizeof p, h, NULL);
    if (rmdir(p) < 0 && errno != ENOENT) perror(p);
  }
}

// Moves the child into the job's cgroup; on failure, ends it and removes what was made.
static void cgroups_join(pid_t pid) {
  char p[400], s[32];
  snprintf(s, sizeof s, "%d", pid);
  for (int h = 0; h < (v2 ? 1 : nhier); h++) {
    path_of(p, sizeof p, h, v2 ? "cgroup.procs" : "tasks");
    int fd = open(p, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, s, strlen(s)) < 0) {
      perror(p);
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
      cgroups_remove();
      _exit(125);
    }
    close(fd);
  }
}

static void mnt(const char *src, const char *dst, const char *type, unsigned long flags, const char *data) {
  if (mount(src, dst, type, flags, data) < 0) die(dst);
}

// A bind mount made read-only (two calls, as mount(2) needs).
static void bind_ro(const char *src, const char *dst, unsigned long extra) {
  mnt(src, dst, NULL, MS_BIND | MS_REC, NULL);
  mnt(NULL, dst, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | extra, NULL);
}

static void dev_tree(void) {
  static const struct { const char *name; unsigned maj, min; } nodes[] = {
      {"dev/null", 1, 3}, {"dev/zero", 1, 5}, {"dev/full", 1, 7}, {"dev/random", 1, 8}, {"dev/urandom", 1, 9}, {"dev/tty", 5, 0}};
  static const char *links[][2] = {{"/proc/self/fd", "dev/fd"}, {"/proc/self/fd/0", "dev/stdin"}, {"/proc/self/fd/1", "dev/stdout"},
                                   {"/proc/self/fd/2", "dev/stderr"}, {"pts/ptmx", "dev/ptmx"}};
  mnt("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k");
  for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++)
    if (mknod(nodes[i].name, S_IFCHR | 0666, makedev(nodes[i].maj, nodes[i].min)) < 0 || chmod(nodes[i].name, 0666) < 0) die(nodes[i].name);
  for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
    if (symlink(links[i][0], links[i][1]) < 0) die(links[i][1]);
  if (mkdir("dev/pts", 0755) < 0) die("dev/pts");
  mnt("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5");
  if (mkdir("dev/shm", 0755) < 0) die("dev/shm");
  mnt("shm", "dev/shm", "tmpfs", MS_NOSUID | MS_NOEXEC | MS_NODEV, "mode=1777,size=65536k");
  if (mkdir("dev/mqueue", 0755) < 0) die("dev/mqueue");
  mnt("mqueue", "dev/mqueue", "mqueue", MS_NOSUID | MS_NOEXEC | MS_NODEV, NULL);
}

static void sys_tree(void) {
  const unsigned long f = MS_NOSUID | MS_NOEXEC | MS_NODEV;
  mnt("sysfs", "sys", "sysfs", f | MS_RDONLY, NULL);
  if (v2) {
    mnt("cgroup", "sys/fs/cgroup", "cgroup2", f | MS_RDONLY | MS_RELATIME, NULL);
    return;
  }
  mnt("tmpfs", "sys/fs/cgroup", "tmpfs", f, "mode=755");
  for (int h = 0; h < nhier; h++) {
    char src[400], dst[300];
    path_of(src, sizeof src, h, NULL);
    snprintf(dst, sizeof dst, "sys/fs/cgroup/%.63s", hier[h]);
    if (mkdir(dst, 0755) < 0) die(dst);
    bind_ro(src, dst, f | MS_RELATIME);
  }
  mnt(NULL, "sys/fs/cgroup", NULL, MS_REMOUNT | MS_RDONLY | f, "mode=755");
}

static void masks(void) {
  static const char *paths[] = {"proc/acpi", "proc/asound", "proc/kcore", "proc/keys", "proc/latency_stats",
                                "proc/timer_list", "proc/timer_stats", "proc/sched_debug", "sys/firmware", "proc/scsi"};
  static const char *ro[] = {"proc/bus", "proc/fs", "proc/irq", "proc/sys", "proc/sysrq-trigger"};
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    struct stat st;
    if (stat(paths[i], &st) < 0) continue; // a path this kernel has not: nothing to mask
    if (S_ISDIR(st.st_mode)) mnt("tmpfs", paths[i], "tmpfs", MS_RDONLY, NULL);
    else mnt("dev/null", paths[i], NULL, MS_BIND, NULL);
  }
  for (size_t i = 0; i < sizeof ro / sizeof ro[0]; i++) {
    if (access(ro[i], F_OK) < 0) continue;
    bind_ro(ro[i], ro[i], MS_NOSUID | MS_NODEV | MS_NOEXEC);
  }
}

// The capability ABI, declared here rather than taken from <linux/capability.h>, so that the
// program builds against musl's headers too (compare-runtime.sh times both builds).
#define CAP_KILL 5
#define CAP_NET_BIND_SERVICE 10
#define CAP_AUDIT_WRITE 29
#define CAPABILITY_VERSION_3 0x20080522
struct cap_header { unsigned version; int pid; };
struct cap_data { unsigned effective, permitted, inheritable; };

static void process(void) {
  struct rlimit r = {1024, 1024};
  if (setrlimit(RLIMIT_NOFILE, &r) < 0) die("setrlimit");
  // The kernel's last capability, as runtimes read it.
  char buf[16] = {0};
  int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || read(fd, buf, sizeof buf - 1) <= 0) die("/proc/sys/kernel/cap_last_cap");
  close(fd);
  const int last = atoi(buf);
  const unsigned long keep = (1UL << CAP_AUDIT_WRITE) | (1UL << CAP_KILL) | (1UL << CAP_NET_BIND_SERVICE);
  for (int c = 0; c <= last; c++)
    if (!(keep & (1UL << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0) die("PR_CAPBSET_DROP");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die("no_new_privs");
  struct cap_header hd = {CAPABILITY_VERSION_3, 0};
  struct cap_data data[2] = {{(unsigned)keep, (unsigned)keep, (unsigned)keep}, {0, 0, 0}};
  if (syscall(SYS_capset, &hd, data) < 0) die("capset");
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: runtime-floor ROOTFS CMD...\n");
    return 2;
  }
  find_hierarchies();
  snprintf(leaf, sizeof leaf, "cagette-floor-%d", getpid());
  cgroups_make(); // (if it fails, the directories made so far stay: a benchmark, run by hand)
  int go[2];
  if (pipe2(go, O_CLOEXEC) < 0) die("pipe");
  pid_t pid = (pid_t)syscall(SYS_clone, CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET | SIGCHLD, NULL, NULL, NULL, 0);
  if (pid < 0) die("clone");
  if (pid == 0) {
    char c;
    close(go[1]);
    if (read(go[0], &c, 1) != 1) _exit(125); // in the job's cgroup from here on
    enter_root(argv[1]);
    dev_tree();
    sys_tree();
    masks();
    if (sethostname("crun", 4) < 0) die("sethostname");
    pivot_here();
    mnt(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL);
    process();
    execv(argv[2], argv + 2);
    die(argv[2]);
  }
  close(go[0]);
  cgroups_join(pid);
  if (write(go[1], "", 1) != 1) die("release the child");
  close(go[1]);
  int status;
  if (waitpid(pid, &status, 0) < 0) die("waitpid");
  cgroups_remove();
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
