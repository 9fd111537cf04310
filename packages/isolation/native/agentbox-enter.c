/*
 * agentbox-enter: put a process into a sandbox before it runs a single
 * instruction of the sandbox's.
 *
 *   agentbox-enter [--cgroup PROCS_FILE]... --uid N --gid N
 *                  [--overlay LOWER:UPPER:WORK:TARGET --root-fd N]
 *                  [--target PID --cwd DIR] -- PROGRAM [ARG]...
 *
 * Without --target (used to start a sandbox's namespace holder): mount the
 * sandbox's overlay root filesystem (if asked) and leave it open on fd N for
 * bubblewrap's --bind-fd, join the given cgroups, drop every group, switch to
 * the unprivileged host uid/gid, set no_new_privs and exec PROGRAM (bubblewrap).
 *
 * With --target (used for every command of a sandbox): join the cgroups,
 * drop groups, join all namespaces of PID (user last, as the privileged
 * caller), take its root, drop the whole capability bounding set while still
 * privileged inside the user namespace, switch to the sandbox uid/gid (which
 * clears the remaining capabilities), set no_new_privs, then fork so the
 * child is inside the pid namespace. The child starts a new session and execs
 * PROGRAM; the parent forwards catchable signals and exits as the child did.
 *
 * It must run as root (the runtime runs it). It is written in C because
 * setns() into a user namespace is impossible from a multi-threaded process
 * such as Node, and because one exec here is much cheaper than a chain of
 * sh + setpriv + nsenter.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>

#define MAX_CGROUPS 16

static void die(const char *what) {
  fprintf(stderr, "agentbox-enter: %s: %s\n", what, strerror(errno));
  _exit(125);
}

static void usage(void) {
  fprintf(stderr, "usage: agentbox-enter [--cgroup FILE]... --uid N --gid N [--target PID --cwd DIR] -- PROGRAM [ARG]...\n");
  _exit(125);
}

static void write_pid(const char *file) {
  int fd = open(file, O_WRONLY | O_CLOEXEC);
  if (fd < 0) die(file);
  char buf[32];
  int n = snprintf(buf, sizeof buf, "%d\n", getpid());
  if (write(fd, buf, n) != n) die(file);
  close(fd);
}

static int open_ns(const char *target, const char *name) {
  char path[128];
  snprintf(path, sizeof path, "/proc/%s/%s", target, name);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die(path);
  return fd;
}

static pid_t child = -1;

static void forward(int sig) {
  if (child > 0) kill(child, sig);
}

int main(int argc, char **argv) {
  const char *cgroups[MAX_CGROUPS];
  int ncgroups = 0;
  const char *target = NULL, *cwd = "/", *overlay = NULL;
  int root_fd = -1;
  long uid = -1, gid = -1;
  int i = 1;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) { i++; break; }
    if (i + 1 >= argc) usage();
    if (strcmp(argv[i], "--cgroup") == 0 && ncgroups < MAX_CGROUPS) cgroups[ncgroups++] = argv[++i];
    else if (strcmp(argv[i], "--target") == 0) target = argv[++i];
    else if (strcmp(argv[i], "--cwd") == 0) cwd = argv[++i];
    else if (strcmp(argv[i], "--overlay") == 0) overlay = argv[++i];
    else if (strcmp(argv[i], "--root-fd") == 0) root_fd = (int)strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--uid") == 0) uid = strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--gid") == 0) gid = strtol(argv[++i], NULL, 10);
    else usage();
  }
  if (i >= argc || uid < 0 || gid < 0) usage();
  char **program = &argv[i];

  if (overlay) {
    /* LOWER:UPPER:WORK:TARGET; paths are made by the runtime and hold no colon. */
    char *spec = strdup(overlay);
    char *lower = strtok(spec, ":"), *upper = strtok(NULL, ":"), *work = strtok(NULL, ":"), *dest = strtok(NULL, ":");
    if (!lower || !upper || !work || !dest || root_fd < 3) usage();
    char options[4096];
    if ((size_t)snprintf(options, sizeof options, "lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work) >= sizeof options) usage();
    if (mount("overlay", dest, "overlay", 0, options) != 0) die("mount overlay");
    int fd = open(dest, O_PATH | O_DIRECTORY);
    if (fd < 0) die(dest);
    if (fd != root_fd) {
      if (dup2(fd, root_fd) < 0) die("dup2");
      close(fd);
    }
    free(spec);
  }

  for (int c = 0; c < ncgroups; c++) write_pid(cgroups[c]);
  /* Supplementary groups of root (gid 0 and others) must not follow us in. */
  if (setgroups(0, NULL) != 0) die("setgroups");

  if (target) {
    static const char *order[] = {"ns/ipc", "ns/uts", "ns/net", "ns/pid", "ns/cgroup", "ns/mnt"};
    int fds[6];
    for (int n = 0; n < 6; n++) fds[n] = open_ns(target, order[n]);
    int userfd = open_ns(target, "ns/user");
    int rootfd = open_ns(target, "root");
    for (int n = 0; n < 6; n++) {
      if (setns(fds[n], 0) != 0) die(order[n]);
      close(fds[n]);
    }
    /* Joined last: from here on we are privileged only inside the sandbox. */
    if (setns(userfd, CLONE_NEWUSER) != 0) die("ns/user");
    close(userfd);
    if (fchdir(rootfd) != 0 || chroot(".") != 0) die("chroot");
    close(rootfd);
    for (int cap = 0; cap <= CAP_LAST_CAP; cap++) {
      if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) die("capbset");
    }
  }
  if (setresgid(gid, gid, gid) != 0) die("setresgid");
  if (setresuid(uid, uid, uid) != 0) die("setresuid");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("no_new_privs");

  if (!target) {
    execvp(program[0], program);
    die(program[0]);
  }

  if (chdir(cwd) != 0) {
    fprintf(stderr, "agentbox-enter: cannot change directory to %s: %s\n", cwd, strerror(errno));
    _exit(126);
  }
  child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    setsid();
    execvp(program[0], program);
    int err = errno;
    fprintf(stderr, "agentbox-enter: %s: %s\n", program[0], strerror(err));
    _exit(err == ENOENT ? 127 : 126);
  }
  static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT, SIGALRM};
  struct sigaction sa = {0};
  sa.sa_handler = forward;
  for (size_t s = 0; s < sizeof forwarded / sizeof *forwarded; s++) sigaction(forwarded[s], &sa, NULL);
  int status;
  while (waitpid(child, &status, 0) < 0) {
    if (errno != EINTR) die("waitpid");
  }
  if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
  int sig = WTERMSIG(status);
  /* Die of the same signal, without a core file, so our parent sees it. */
  struct rlimit none = {0, 0};
  setrlimit(RLIMIT_CORE, &none);
  signal(sig, SIG_DFL);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  sigprocmask(SIG_UNBLOCK, &set, NULL);
  kill(getpid(), sig);
  _exit(128 + sig);
}
