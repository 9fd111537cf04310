/*
 * agentbox-enter: put a process into a sandbox before it runs a single
 * instruction of the sandbox's.
 *
 * One-shot mode (for callers that spawn processes themselves, e.g. a PTY):
 *
 *   agentbox-enter [--cgroup PROCS_FILE]... --uid N --gid N
 *                  [--overlay LOWER:UPPER:WORK:TARGET --root-fd N]
 *                  [--target PID --cwd DIR [--tty]] -- PROGRAM [ARG]...
 *
 * With --tty, stdin is a terminal that is our controlling terminal (as a PTY
 * library sets it up): we hand it over so the program, in its own session
 * inside the sandbox, has it as its controlling terminal (job control works).
 *
 * Server mode (used by the runtime for every sandbox and command):
 *
 *   agentbox-enter --serve
 *
 * reads spawn requests from stdin and answers on stdout (frames: a 4-byte
 * little-endian length, then NUL-terminated "key=value" strings; the first
 * string is the operation). It forks for each request, so the cost of
 * starting a command does not grow with the size of the runtime (Node forks
 * its whole address space), and reports exits. The runtime opens the pipe
 * ends it needs through /proc/<this pid>/fd/N, then releases them.
 *
 *   → spawn id=I [target=PID] uid= gid= [cwd=] [overlay= root_fd=N] [info=1]
 *           [stdin=null] [exec=HOST_PATH] cgroup=F... argv=A... env=K=V...
 *     (exec: run that host file, opened before entering, with argv; used for the
 *     files helper, which the sandbox must not see or change)
 *   ← started id=I pid=P stdin=N stdout=N stderr=N [info=N]
 *   → release id=I          (the runtime has opened its ends: close ours)
 *   ← exit id=I status=S    (raw wait status)
 *   → listen id=I target=PID port=N
 *   ← (on the IPC channel) a handle message with {"listenId":I}, or "failed id=I" here
 *   → take id=I pid=RUNTIME via=FD fd=N   (descriptor N of the peer of the runtime's socket FD)
 *   ← as for listen
 *
 * With `--serve --ipc FD`, FD is the runtime's Node IPC channel: the one way
 * to hand a Node process a socket (a listener made inside a sandbox's network
 * namespace for its egress proxy). Node's own framing is used there: a JSON
 * line {"cmd":"NODE_HANDLE",...} sent with the descriptor; its acks are read
 * and dropped.
 *
 * What entering means. Without a target (starting a sandbox's namespace
 * holder): mount the sandbox's overlay root filesystem (if asked) and leave
 * it open on fd N for bubblewrap's --bind-fd, join the cgroups, drop every
 * group, switch to the unprivileged host uid/gid, set no_new_privs and exec
 * PROGRAM (bubblewrap). With a target (every command of a sandbox): join the
 * cgroups, drop groups, join all namespaces of PID (user last, while
 * privileged), take its root, drop the whole capability bounding set while
 * still privileged inside the user namespace, switch to the sandbox uid/gid
 * (which clears the remaining capabilities), set no_new_privs, then fork so
 * the child is inside the pid namespace. The child starts a new session and
 * execs PROGRAM; the parent forwards catchable signals and exits as the
 * child did.
 *
 * It must run as root. It is written in C because setns() into a user
 * namespace is impossible from a multi-threaded process such as Node.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <linux/capability.h>

extern char **environ;

#define MAX_CGROUPS 16
#define MAX_FRAME (16 * 1024 * 1024)

struct spec {
  const char *cgroups[MAX_CGROUPS];
  int ncgroups;
  const char *target, *cwd, *overlay;
  int root_fd;
  long uid, gid;
  char **argv;
  char **env; /* NULL: keep the current environment */
  int pid_fd;  /* with a target: the command writes its pid (as seen inside) here, then execs */
  int tty;     /* pass our controlling terminal (stdin) on to the program */
  const char *exec_path; /* run this host file (opened before entering) instead of argv[0] */
};

static void die(const char *what) {
  fprintf(stderr, "agentbox-enter: %s: %s\n", what, strerror(errno));
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

static void mount_overlay(const char *overlay, int root_fd) {
  /* LOWER[:LOWER...]:UPPER:WORK:TARGET (lower dirs top first); paths are made by the runtime and
   * hold no colon, so the last three fields are found from the end. */
  char *spec = strdup(overlay);
  char *dest = strrchr(spec, ':');
  if (dest) *dest++ = 0;
  char *work = dest ? strrchr(spec, ':') : NULL;
  if (work) *work++ = 0;
  char *upper = work ? strrchr(spec, ':') : NULL;
  if (upper) *upper++ = 0;
  char *lower = spec;
  if (!upper || !*lower || !*upper || !*work || !*dest || root_fd < 3) {
    fprintf(stderr, "agentbox-enter: bad overlay spec\n");
    _exit(125);
  }
  char options[4096]; /* mount(2) copies at most a page of options */
  /* redirect_dir and metacopy stay off: a layer made from a sandbox's upper dir must hold
   * whole files, never references into the layers below it. */
  if ((size_t)snprintf(options, sizeof options, "lowerdir=%s,upperdir=%s,workdir=%s,redirect_dir=off,metacopy=off", lower, upper, work) >= sizeof options) {
    fprintf(stderr, "agentbox-enter: overlay options too long (too many image layers)\n");
    _exit(125);
  }
  if (mount("overlay", dest, "overlay", 0, options) != 0) die("mount overlay");
  int fd = open(dest, O_PATH | O_DIRECTORY);
  if (fd < 0) die(dest);
  if (fd != root_fd) {
    if (dup2(fd, root_fd) < 0) die("dup2");
    close(fd);
  }
  free(spec);
}

/* Enter the sandbox described by `s` and exec its program. Never returns. */
static void enter(const struct spec *s) {
  /* A program of ours (the files helper) runs from a descriptor: the sandbox has no copy of it. */
  int exec_fd = -1;
  if (s->exec_path) {
    exec_fd = open(s->exec_path, O_RDONLY | O_CLOEXEC);
    if (exec_fd < 0) die(s->exec_path);
  }
  if (s->overlay) mount_overlay(s->overlay, s->root_fd);
  for (int c = 0; c < s->ncgroups; c++) write_pid(s->cgroups[c]);
  /* Supplementary groups of root (gid 0 and others) must not follow us in. */
  if (setgroups(0, NULL) != 0) die("setgroups");

  if (s->target) {
    static const char *order[] = {"ns/ipc", "ns/uts", "ns/net", "ns/pid", "ns/cgroup", "ns/mnt"};
    int fds[6];
    for (int n = 0; n < 6; n++) fds[n] = open_ns(s->target, order[n]);
    int userfd = open_ns(s->target, "ns/user");
    int rootfd = open_ns(s->target, "root");
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
  if (setresgid(s->gid, s->gid, s->gid) != 0) die("setresgid");
  if (setresuid(s->uid, s->uid, s->uid) != 0) die("setresuid");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("no_new_privs");
  if (s->env) environ = s->env;

  if (!s->target) {
    execvp(s->argv[0], s->argv);
    die(s->argv[0]);
  }

  if (chdir(s->cwd ? s->cwd : "/") != 0) {
    fprintf(stderr, "agentbox-enter: cannot change directory to %s: %s\n", s->cwd, strerror(errno));
    _exit(126);
  }
  if (s->tty) {
    /* Only the terminal follows us from the PTY library's process. */
    syscall(SYS_close_range, 3, ~0U, 0);
    /* Give up the terminal (a session leader's TIOCNOTTY also hangs up its foreground
       group, which is us: ignore that) so the child's new session can take it. */
    signal(SIGHUP, SIG_IGN);
    if (ioctl(0, TIOCNOTTY) != 0) die("TIOCNOTTY");
    signal(SIGHUP, SIG_DFL);
  }
  child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    setsid();
    if (s->tty && ioctl(0, TIOCSCTTY, 0) != 0) die("TIOCSCTTY");
    if (s->pid_fd >= 0) {
      pid_t me = getpid();
      if (write(s->pid_fd, &me, sizeof me) != sizeof me) {}
      close(s->pid_fd);
    }
    /* Nothing of the caller's (e.g. a PTY library's parent) may follow into the sandbox. */
    if (exec_fd >= 0) {
      if (dup3(exec_fd, 3, O_CLOEXEC) < 0) die("exec fd");
      syscall(SYS_close_range, 4, ~0U, 0);
      fexecve(3, s->argv, environ);
      die(s->exec_path);
    }
    syscall(SYS_close_range, 3, ~0U, 0);
    execvp(s->argv[0], s->argv);
    int err = errno;
    fprintf(stderr, "agentbox-enter: %s: %s\n", s->argv[0], strerror(err));
    _exit(err == ENOENT ? 127 : 126);
  }
  if (s->pid_fd >= 0) close(s->pid_fd);
  if (s->tty) {
    /* Hold no end of the terminal: it hangs up when the program's side closes, as with no helper between. */
    close(0);
    close(1);
    close(2);
  }
  static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT, SIGALRM};
  struct sigaction sa = {0};
  sa.sa_handler = forward;
  for (size_t i = 0; i < sizeof forwarded / sizeof *forwarded; i++) sigaction(forwarded[i], &sa, NULL);
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

/* ---------------------------------------------------------------- server mode */

struct job {
  long id;
  pid_t pid;
  int fds[4]; /* our ends: stdin (write), stdout, stderr, info (read); -1 when none */
  struct job *next;
};

static struct job *jobs;

static void send_frame(const char *const *fields, int n) {
  size_t len = 0;
  for (int i = 0; i < n; i++) len += strlen(fields[i]) + 1;
  char *buf = malloc(4 + len);
  if (!buf) die("malloc");
  uint32_t l = (uint32_t)len;
  memcpy(buf, &l, 4); /* little-endian on every Linux target we build for */
  size_t off = 4;
  for (int i = 0; i < n; i++) {
    size_t fl = strlen(fields[i]) + 1;
    memcpy(buf + off, fields[i], fl);
    off += fl;
  }
  for (size_t done = 0; done < off;) {
    ssize_t w = write(1, buf + done, off - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      _exit(0); /* the runtime is gone */
    }
    done += (size_t)w;
  }
  free(buf);
}

static void close_job_fds(struct job *j) {
  for (int i = 0; i < 4; i++) {
    if (j->fds[i] >= 0) close(j->fds[i]);
    j->fds[i] = -1;
  }
}

static void reply_error(const char *id, const char *message) {
  char idf[64], msg[512];
  snprintf(idf, sizeof idf, "id=%s", id);
  snprintf(msg, sizeof msg, "error=%s: %s", message, strerror(errno));
  const char *f[] = {"failed", idf, msg};
  send_frame(f, 3);
}

/* Remember a started process with our ends of its pipes (-1: none) and tell the runtime. */
static void start_job(const char *id, pid_t pid, int in, int out, int err, int info, pid_t nspid) {
  struct job *j = calloc(1, sizeof *j);
  if (!j) die("calloc");
  j->id = strtol(id, NULL, 10);
  j->pid = pid;
  j->fds[0] = in;
  j->fds[1] = out;
  j->fds[2] = err;
  j->fds[3] = info;
  j->next = jobs;
  jobs = j;
  char f_id[64], f_pid[32], f_in[32], f_out[32], f_err[32], f_info[32], f_nspid[32];
  snprintf(f_id, sizeof f_id, "id=%s", id);
  snprintf(f_pid, sizeof f_pid, "pid=%d", pid);
  snprintf(f_in, sizeof f_in, "stdin=%d", in);
  snprintf(f_out, sizeof f_out, "stdout=%d", out);
  snprintf(f_err, sizeof f_err, "stderr=%d", err);
  snprintf(f_info, sizeof f_info, "info=%d", info);
  snprintf(f_nspid, sizeof f_nspid, "nspid=%d", nspid);
  const char *reply[] = {"started", f_id, f_pid, f_in, f_out, f_err, f_info, f_nspid};
  send_frame(reply, 8);
}

static void handle_spawn(char **fields, int n) {
  struct spec s = {.root_fd = -1, .uid = -1, .gid = -1, .pid_fd = -1};
  const char *id = NULL;
  int want_info = 0, stdin_null = 0;
  char **argv = calloc((size_t)n + 1, sizeof *argv);
  char **env = calloc((size_t)n + 1, sizeof *env);
  int nargv = 0, nenv = 0;
  for (int i = 1; i < n; i++) {
    char *f = fields[i];
    if (!strncmp(f, "id=", 3)) id = f + 3;
    else if (!strncmp(f, "target=", 7)) s.target = f + 7;
    else if (!strncmp(f, "uid=", 4)) s.uid = strtol(f + 4, NULL, 10);
    else if (!strncmp(f, "gid=", 4)) s.gid = strtol(f + 4, NULL, 10);
    else if (!strncmp(f, "cwd=", 4)) s.cwd = f + 4;
    else if (!strncmp(f, "overlay=", 8)) s.overlay = f + 8;
    else if (!strncmp(f, "root_fd=", 8)) s.root_fd = (int)strtol(f + 8, NULL, 10);
    else if (!strncmp(f, "info=", 5)) want_info = 1;
    else if (!strncmp(f, "stdin=null", 10)) stdin_null = 1;
    else if (!strncmp(f, "exec=", 5)) s.exec_path = f + 5;
    else if (!strncmp(f, "cgroup=", 7) && s.ncgroups < MAX_CGROUPS) s.cgroups[s.ncgroups++] = f + 7;
    else if (!strncmp(f, "argv=", 5)) argv[nargv++] = f + 5;
    else if (!strncmp(f, "env=", 4)) env[nenv++] = f + 4;
  }
  s.argv = argv;
  s.env = env;
  if (!id) return;
  if (nargv == 0 || s.uid < 0 || s.gid < 0) {
    errno = EINVAL;
    reply_error(id, "incomplete spawn request");
    goto out;
  }

  int in[2] = {-1, -1}, out_[2], err_[2], info[2] = {-1, -1}, pidp[2] = {-1, -1};
  if ((!stdin_null && pipe2(in, O_CLOEXEC) != 0) || pipe2(out_, O_CLOEXEC) != 0 || pipe2(err_, O_CLOEXEC) != 0 ||
      (want_info && pipe2(info, O_CLOEXEC) != 0) || (s.target && pipe2(pidp, O_CLOEXEC) != 0)) {
    reply_error(id, "pipe");
    goto out;
  }
  pid_t pid = fork();
  if (pid < 0) {
    reply_error(id, "fork");
    close(out_[0]), close(out_[1]), close(err_[0]), close(err_[1]);
    if (in[0] >= 0) close(in[0]), close(in[1]);
    if (info[0] >= 0) close(info[0]), close(info[1]);
    goto out;
  }
  if (pid == 0) {
    /* Child: move our ends to high numbers first so the dup2s below cannot clobber them. */
    int cin = stdin_null ? open("/dev/null", O_RDONLY | O_CLOEXEC) : fcntl(in[0], F_DUPFD_CLOEXEC, 10);
    int cout = fcntl(out_[1], F_DUPFD_CLOEXEC, 10), cerr = fcntl(err_[1], F_DUPFD_CLOEXEC, 10);
    int cinfo = want_info ? fcntl(info[1], F_DUPFD_CLOEXEC, 10) : -1;
    int cpid = pidp[1] >= 0 ? fcntl(pidp[1], F_DUPFD_CLOEXEC, 10) : -1;
    if (cin < 0 || cout < 0 || cerr < 0 || dup2(cin, 0) < 0 || dup2(cout, 1) < 0 || dup2(cerr, 2) < 0) die("stdio");
    if (cinfo >= 0 && dup2(cinfo, 4) < 0) die("info fd");
    /* Nothing else of ours may stay open: the helper that waits for the command
       never execs, so close-on-exec alone would keep other commands' pipes alive. */
    if (cpid >= 0) {
      /* The pid pipe goes to fd 3 (commands have no info pipe). */
      if (dup3(cpid, 3, O_CLOEXEC) < 0) die("pid fd");
      s.pid_fd = 3;
    } else if (cinfo >= 0) {
      close(3);
    }
    if (syscall(SYS_close_range, cinfo >= 0 ? 5 : cpid >= 0 ? 4 : 3, ~0U, 0) != 0) die("close_range");
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    signal(SIGPIPE, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, 0);
    enter(&s);
  }
  /* The command's pid inside the sandbox: written just before it execs (0 if it never got there). */
  pid_t nspid = 0;
  if (pidp[0] >= 0) {
    close(pidp[1]);
    ssize_t r;
    do r = read(pidp[0], &nspid, sizeof nspid);
    while (r < 0 && errno == EINTR);
    if (r != sizeof nspid) nspid = 0;
    close(pidp[0]);
  }
  if (in[0] >= 0) close(in[0]);
  close(out_[1]);
  close(err_[1]);
  if (info[1] >= 0) close(info[1]);
  start_job(id, pid, in[1], out_[0], err_[0], info[0], nspid);
out:
  free(argv);
  free(env);
}

/*
 * A pidfd of the process at the other end of unix socket VIA of process `pidfd` (the kernel names
 * it: SO_PEERCRED), or -1 with errno set. A peer in a pid namespace we cannot see has pid 0.
 */
static int peer_pidfd_of(int pidfd, long via) {
  int s = (int)syscall(SYS_pidfd_getfd, pidfd, (int)via, 0);
  struct ucred cred = {0};
  socklen_t len = sizeof cred;
  int ok = s >= 0 && getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.pid > 0;
  if (s >= 0) close(s);
  if (!ok) {
    errno = ESRCH;
    return -1;
  }
  return (int)syscall(SYS_pidfd_open, cred.pid, 0);
}

/*
 * relay: take two sockets or pipes of the runtime (pidfd_getfd: the runtime cannot pass
 * descriptors itself) and run `exec` (agentbox-net relay 3 4) on them, so bulk bytes of a
 * proxied connection or a file transfer move by splice instead of through an event loop.
 * With `peer=FD` and `peerside=a|b`, that side is taken from the process at the other end of
 * the owner's unix socket FD instead (the server, for its client's connection): the kernel
 * names that process (SO_PEERCRED), so the owner cannot point the relay at any other one.
 * Answers like spawn: "started" with the helper's stdout (its byte counts) and stderr, then
 * "exit".
 */
static void handle_relay(char **fields, int n) {
  const char *id = NULL, *exec_path = NULL, *count = NULL;
  long owner = -1, fa = -1, fb = -1, peer = -1;
  char peer_side = 0;
  for (int i = 1; i < n; i++) {
    char *f = fields[i];
    if (!strncmp(f, "id=", 3)) id = f + 3;
    else if (!strncmp(f, "pid=", 4)) owner = strtol(f + 4, NULL, 10);
    else if (!strncmp(f, "peer=", 5)) peer = strtol(f + 5, NULL, 10);
    else if (!strncmp(f, "peerside=", 9)) peer_side = f[9];
    else if (!strncmp(f, "a=", 2)) fa = strtol(f + 2, NULL, 10);
    else if (!strncmp(f, "b=", 2)) fb = strtol(f + 2, NULL, 10);
    else if (!strncmp(f, "exec=", 5)) exec_path = f + 5;
    else if (!strncmp(f, "count=", 6)) count = f + 6;
  }
  if (!id) return;
  if (owner <= 0 || fa < 0 || fb < 0 || !exec_path) {
    errno = EINVAL;
    reply_error(id, "incomplete relay request");
    return;
  }
  if (peer >= 0 && peer_side != 'a' && peer_side != 'b') {
    errno = EINVAL;
    reply_error(id, "peerside must be a or b");
    return;
  }
  int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)owner, 0);
  if (pidfd < 0) return reply_error(id, "pidfd_open");
  int peer_pidfd = -1;
  if (peer >= 0 && (peer_pidfd = peer_pidfd_of(pidfd, peer)) < 0) {
    close(pidfd);
    return reply_error(id, "peer of the socket");
  }
  int a = (int)syscall(SYS_pidfd_getfd, peer_side == 'a' ? peer_pidfd : pidfd, (int)fa, 0);
  int b = a < 0 ? -1 : (int)syscall(SYS_pidfd_getfd, peer_side == 'b' ? peer_pidfd : pidfd, (int)fb, 0);
  if (peer_pidfd >= 0) close(peer_pidfd);
  close(pidfd);
  int out_[2] = {-1, -1}, err_[2] = {-1, -1};
  if (a < 0 || b < 0 || pipe2(out_, O_CLOEXEC) != 0 || pipe2(err_, O_CLOEXEC) != 0) {
    reply_error(id, a < 0 || b < 0 ? "pidfd_getfd" : "pipe");
    if (a >= 0) close(a);
    if (b >= 0) close(b);
    if (out_[0] >= 0) close(out_[0]), close(out_[1]);
    return;
  }
  pid_t pid = fork();
  if (pid == 0) {
    int ca = fcntl(a, F_DUPFD_CLOEXEC, 10), cb = fcntl(b, F_DUPFD_CLOEXEC, 10);
    int cout = fcntl(out_[1], F_DUPFD_CLOEXEC, 10), cerr = fcntl(err_[1], F_DUPFD_CLOEXEC, 10);
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (ca < 0 || cb < 0 || cout < 0 || cerr < 0 || devnull < 0 || dup2(devnull, 0) < 0 || dup2(cout, 1) < 0 || dup2(cerr, 2) < 0 ||
        dup2(ca, 3) < 0 || dup2(cb, 4) < 0)
      _exit(127);
    syscall(SYS_close_range, 5, ~0U, 0);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    /* Moving bytes between open sockets needs no privilege: the relay runs as nobody (its
       program opened first, so a checkout under a private directory still runs). */
    int exe = open(exec_path, O_RDONLY | O_CLOEXEC);
    if (exe < 0) _exit(127);
    if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(126);
    /* With a count: move that many bytes from b to a only (agentbox-net relay-n). */
    char *const argv_all[] = {"agentbox-net", "relay", "3", "4", NULL};
    char *const argv_n[] = {"agentbox-net", "relay-n", "3", "4", (char *)count, NULL};
    char *const *argv = count ? argv_n : argv_all;
    char *const envp[] = {NULL};
    syscall(SYS_execveat, exe, "", argv, envp, AT_EMPTY_PATH);
    _exit(127);
  }
  close(a);
  close(b);
  close(out_[1]);
  close(err_[1]);
  if (pid < 0) {
    close(out_[0]);
    close(err_[0]);
    return reply_error(id, "fork");
  }
  start_job(id, pid, -1, out_[0], err_[0], -1, 0);
}

/* The runtime's Node IPC channel (--ipc FD), or -1. */
static int ipc_fd = -1;
/* Our own network namespace, to come back to after making a socket in a sandbox's. */
static int own_netns = -1;

/*
 * Hand descriptor `s` (closed here) to the runtime over its Node IPC channel as a handle
 * message {"listenId":ID}; answers "failed id=ID" (with `what`) if that fails.
 */
static void send_handle(const char *id, int s, const char *what) {
  char msg[160];
  int len = snprintf(msg, sizeof msg, "{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\",\"msg\":{\"listenId\":%ld}}\n", strtol(id, NULL, 10));
  struct iovec iov = {msg, (size_t)len};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof control);
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
  struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(cm), &s, sizeof(int));
  ssize_t w;
  do w = sendmsg(ipc_fd, &mh, MSG_NOSIGNAL);
  while (w < 0 && errno == EINTR);
  int err = errno;
  close(s);
  if (w != len) {
    errno = w < 0 ? err : EIO;
    reply_error(id, what);
  }
}

/*
 * take: descriptor FD of the process at the other end of the runtime's unix socket VIA (the
 * server: the kernel names it, SO_PEERCRED), handed to the runtime like a listener. The server
 * gives the runtime a client's connection this way (a code session's WebSocket), so that the
 * session's messages skip the server's hop. Only a socket is handed over.
 */
static void handle_take(char **fields, int n) {
  const char *id = NULL;
  long owner = -1, via = -1, fd = -1;
  for (int i = 1; i < n; i++) {
    char *f = fields[i];
    if (!strncmp(f, "id=", 3)) id = f + 3;
    else if (!strncmp(f, "pid=", 4)) owner = strtol(f + 4, NULL, 10);
    else if (!strncmp(f, "via=", 4)) via = strtol(f + 4, NULL, 10);
    else if (!strncmp(f, "fd=", 3)) fd = strtol(f + 3, NULL, 10);
  }
  if (!id) return;
  if (owner <= 0 || via < 0 || fd < 0 || ipc_fd < 0) {
    errno = EINVAL;
    return reply_error(id, ipc_fd < 0 ? "no IPC channel (--ipc)" : "incomplete take request");
  }
  int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)owner, 0);
  if (pidfd < 0) return reply_error(id, "pidfd_open");
  int peer = peer_pidfd_of(pidfd, via);
  close(pidfd);
  if (peer < 0) return reply_error(id, "peer of the socket");
  int s = (int)syscall(SYS_pidfd_getfd, peer, (int)fd, 0);
  close(peer);
  if (s < 0) return reply_error(id, "pidfd_getfd");
  int type = 0;
  socklen_t tl = sizeof type;
  if (getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_STREAM) {
    close(s);
    errno = ENOTSOCK;
    return reply_error(id, "not a stream socket");
  }
  send_handle(id, s, "send the socket");
}

/*
 * listen: a TCP listener on 127.0.0.1:PORT inside the network namespace of process PID (a
 * sandbox's egress proxy port), handed to the runtime. A socket keeps the namespace it was made
 * in, so we enter the sandbox's only for socket/bind/listen and come straight back. It is made
 * as root: the sandbox's user can neither close it nor bind the port beside it (SO_REUSEPORT
 * needs the same owner), and nothing of the host is mounted into the sandbox for it.
 */
static void handle_listen(char **fields, int n) {
  const char *id = NULL;
  long target = -1, port = -1;
  for (int i = 1; i < n; i++) {
    char *f = fields[i];
    if (!strncmp(f, "id=", 3)) id = f + 3;
    else if (!strncmp(f, "target=", 7)) target = strtol(f + 7, NULL, 10);
    else if (!strncmp(f, "port=", 5)) port = strtol(f + 5, NULL, 10);
  }
  if (!id) return;
  if (target <= 0 || port < 1 || port > 65535 || ipc_fd < 0 || own_netns < 0) {
    errno = EINVAL;
    return reply_error(id, ipc_fd < 0 ? "no IPC channel (--ipc)" : "incomplete listen request");
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/%ld/ns/net", target);
  int ns = open(path, O_RDONLY | O_CLOEXEC);
  if (ns < 0) return reply_error(id, "open the sandbox's network namespace");
  if (setns(ns, CLONE_NEWNET) != 0) {
    close(ns);
    return reply_error(id, "setns");
  }
  close(ns);
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int ok = s >= 0 && bind(s, (struct sockaddr *)&addr, sizeof addr) == 0 && listen(s, 1024) == 0;
  int err = errno;
  /* Every later fork must start in our namespace: failing to return is fatal. */
  if (setns(own_netns, CLONE_NEWNET) != 0) die("setns (back)");
  if (!ok) {
    if (s >= 0) close(s);
    errno = err;
    return reply_error(id, "listen in the sandbox");
  }
  send_handle(id, s, "send the listener");
}

static void handle_release(char **fields, int n) {
  for (int i = 1; i < n; i++) {
    if (strncmp(fields[i], "id=", 3)) continue;
    long id = strtol(fields[i] + 3, NULL, 10);
    for (struct job *j = jobs; j; j = j->next) {
      if (j->id == id) close_job_fds(j);
    }
  }
}

static void reap(void) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    for (struct job **pp = &jobs; *pp; pp = &(*pp)->next) {
      struct job *j = *pp;
      if (j->pid != pid) continue;
      char f_id[64], f_status[32];
      snprintf(f_id, sizeof f_id, "id=%ld", j->id);
      snprintf(f_status, sizeof f_status, "status=%d", status);
      const char *f[] = {"exit", f_id, f_status};
      send_frame(f, 3);
      /* Pipe ends the runtime has not taken yet stay until it releases them. */
      if (j->fds[0] < 0 && j->fds[1] < 0 && j->fds[2] < 0 && j->fds[3] < 0) {
        *pp = j->next;
        free(j);
      } else {
        j->pid = -1;
      }
      break;
    }
  }
  /* Forget released jobs whose process is gone. */
  for (struct job **pp = &jobs; *pp;) {
    struct job *j = *pp;
    if (j->pid < 0 && j->fds[0] < 0 && j->fds[1] < 0 && j->fds[2] < 0 && j->fds[3] < 0) {
      *pp = j->next;
      free(j);
    } else {
      pp = &j->next;
    }
  }
}

static int serve(int ipc) {
  /* Die with the runtime; its sandboxes' holders die with us (--die-with-parent). */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1) return 0;
  /* Node announces its channel in our environment: no child of ours may inherit either. */
  clearenv();
  if (ipc >= 0) {
    ipc_fd = fcntl(ipc, F_DUPFD_CLOEXEC, 10);
    close(ipc);
    if (ipc_fd >= 0) fcntl(ipc_fd, F_SETFL, fcntl(ipc_fd, F_GETFL) | O_NONBLOCK);
  }
  own_netns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  signal(SIGPIPE, SIG_IGN);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) die("signalfd");
  fcntl(0, F_SETFD, FD_CLOEXEC);
  fcntl(1, F_SETFD, FD_CLOEXEC);

  char *buf = malloc(MAX_FRAME + 4);
  size_t have = 0;
  for (;;) {
    struct pollfd p[3] = {{.fd = 0, .events = POLLIN}, {.fd = sfd, .events = POLLIN}, {.fd = ipc_fd, .events = POLLIN}};
    if (poll(p, 3, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (p[2].revents) {
      /* Node's acks of our handles: nothing to act on. */
      char drop[4096];
      ssize_t r;
      while ((r = read(ipc_fd, drop, sizeof drop)) > 0) {}
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        close(ipc_fd);
        ipc_fd = -1;
      }
    }
    if (p[1].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si) {}
      reap();
    }
    if (p[0].revents & (POLLIN | POLLHUP)) {
      ssize_t r = read(0, buf + have, MAX_FRAME + 4 - have);
      if (r <= 0) return 0; /* the runtime closed our stdin: stop */
      have += (size_t)r;
      for (;;) {
        if (have < 4) break;
        uint32_t len;
        memcpy(&len, buf, 4);
        if (len > MAX_FRAME) {
          fprintf(stderr, "agentbox-enter: oversize frame\n");
          return 1;
        }
        if (have < 4 + (size_t)len) break;
        /* Split the payload into its NUL-terminated fields. */
        int n = 0;
        for (uint32_t i = 0; i < len; i++) n += buf[4 + i] == '\0';
        char **fields = calloc((size_t)n + 1, sizeof *fields);
        int k = 0;
        for (uint32_t i = 0; i < len && k < n; k++) {
          fields[k] = buf + 4 + i;
          i += (uint32_t)strlen(fields[k]) + 1;
        }
        if (n > 0 && !strcmp(fields[0], "spawn")) handle_spawn(fields, n);
        else if (n > 0 && !strcmp(fields[0], "release")) handle_release(fields, n);
        else if (n > 0 && !strcmp(fields[0], "relay")) handle_relay(fields, n);
        else if (n > 0 && !strcmp(fields[0], "listen")) handle_listen(fields, n);
        else if (n > 0 && !strcmp(fields[0], "take")) handle_take(fields, n);
        free(fields);
        memmove(buf, buf + 4 + len, have - 4 - len);
        have -= 4 + len;
      }
    }
  }
}

/* ---------------------------------------------------------------- one-shot mode */

static void usage(void) {
  fprintf(stderr,
          "usage: agentbox-enter --serve [--ipc FD]\n"
          "       agentbox-enter [--cgroup FILE]... --uid N --gid N [--overlay L:U:W:T --root-fd N]\n"
          "                      [--target PID --cwd DIR [--tty]] -- PROGRAM [ARG]...\n");
  _exit(125);
}

int main(int argc, char **argv) {
  if (argc == 2 && !strcmp(argv[1], "--serve")) return serve(-1);
  if (argc == 4 && !strcmp(argv[1], "--serve") && !strcmp(argv[2], "--ipc")) return serve((int)strtol(argv[3], NULL, 10));
  struct spec s = {.root_fd = -1, .uid = -1, .gid = -1, .pid_fd = -1};
  int i = 1;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) {
      i++;
      break;
    }
    if (i + 1 >= argc) usage();
    if (strcmp(argv[i], "--cgroup") == 0 && s.ncgroups < MAX_CGROUPS) s.cgroups[s.ncgroups++] = argv[++i];
    else if (strcmp(argv[i], "--target") == 0) s.target = argv[++i];
    else if (strcmp(argv[i], "--cwd") == 0) s.cwd = argv[++i];
    else if (strcmp(argv[i], "--tty") == 0) s.tty = 1;
    else if (strcmp(argv[i], "--overlay") == 0) s.overlay = argv[++i];
    else if (strcmp(argv[i], "--root-fd") == 0) s.root_fd = (int)strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--uid") == 0) s.uid = strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--gid") == 0) s.gid = strtol(argv[++i], NULL, 10);
    else usage();
  }
  if (i >= argc || s.uid < 0 || s.gid < 0) usage();
  s.argv = &argv[i];
  enter(&s);
  return 125;
}
