/*
 * agentbox-fs: the files API's hands inside a sandbox.
 *
 * The runtime starts it through agentbox-enter (fexecve from a descriptor, so
 * the sandbox needs no copy of it and cannot change it), as the sandbox's user,
 * inside the sandbox's namespaces and root. Every path is therefore resolved
 * exactly as a process of the sandbox would resolve it, with its permissions:
 * `..`, symlinks (also ones swapped mid-call) and /proc links all stay inside.
 *
 *   agentbox-fs read PATH            stdout: {"size":N}\n then the bytes
 *   agentbox-fs write PATH MODE      stdin: the bytes; stdout: {"size":N}\n
 *                                    (into a temporary file renamed over PATH
 *                                    at EOF; SIGTERM or an error removes it)
 *   agentbox-fs stat PATH            stdout: one entry
 *   agentbox-fs list PATH DEPTH      stdout: one entry per line
 *   agentbox-fs mkdir PATH 0|1       (1: with parents, and no error if it exists)
 *   agentbox-fs move FROM TO
 *   agentbox-fs remove PATH 0|1      (1: recursive)
 *   agentbox-fs watch PATH 0|1       stdout: one event per line until stdin closes
 *
 * An entry is {"name","path","type":"file"|"dir"|"symlink"|"other","size",
 * "mode","mtime","symlinkTarget"?}. Errors: exit 1 and {"error":"ENOENT",
 * "message":"..."} on stderr. Statically linked: it runs on any image.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *errname(int e) {
  switch (e) {
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EISDIR: return "EISDIR";
    case ENOTDIR: return "ENOTDIR";
    case EEXIST: return "EEXIST";
    case ENOTEMPTY: return "ENOTEMPTY";
    case ENOSPC: return "ENOSPC";
    case EDQUOT: return "EDQUOT";
    case EROFS: return "EROFS";
    case ELOOP: return "ELOOP";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case EINVAL: return "EINVAL";
    case EXDEV: return "EXDEV";
    case EBUSY: return "EBUSY";
    case EMFILE: return "EMFILE";
    default: return "EIO";
  }
}

/* ------------------------------------------------------------------ output */

static char outbuf[1 << 16];
static size_t outlen;

static void flush_out(void) {
  size_t off = 0;
  while (off < outlen) {
    ssize_t n = write(1, outbuf + off, outlen - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      _exit(1); /* reader gone */
    }
    off += (size_t)n;
  }
  outlen = 0;
}

static void out(const char *s, size_t n) {
  if (outlen + n > sizeof outbuf) flush_out();
  if (n > sizeof outbuf) {
    while (n > 0) {
      ssize_t w = write(1, s, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        _exit(1);
      }
      s += w;
      n -= (size_t)w;
    }
    return;
  }
  memcpy(outbuf + outlen, s, n);
  outlen += n;
}

static void outs(const char *s) { out(s, strlen(s)); }

static void outf(const char *fmt, ...) {
  char tmp[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n > 0) out(tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A JSON string; bytes >= 0x80 pass through (UTF-8 names stay readable). */
static void out_json_string(const char *s) {
  out("\"", 1);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') {
      char e[2] = {'\\', (char)*p};
      out(e, 2);
    } else if (*p < 0x20 || *p == 0x7f) {
      outf("\\u%04x", *p);
    } else {
      out((const char *)p, 1);
    }
  }
  out("\"", 1);
}

static void fail(int e, const char *what) {
  flush_out();
  char msg[PATH_MAX + 128];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(e));
  outlen = 0;
  /* stderr, unbuffered, one line */
  dprintf(2, "{\"error\":\"%s\",\"message\":", errname(e));
  /* reuse the JSON escaper through stdout's buffer, then move it to stderr */
  out_json_string(msg);
  if (write(2, outbuf, outlen) < 0) {}
  outlen = 0;
  dprintf(2, "}\n");
  _exit(1);
}

static void out_entry_(const char *path, const char *name, const struct stat *st, int newline) {
  const char *type = S_ISREG(st->st_mode) ? "file" : S_ISDIR(st->st_mode) ? "dir" : S_ISLNK(st->st_mode) ? "symlink" : "other";
  char when[64];
  struct tm tm;
  gmtime_r(&st->st_mtim.tv_sec, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  outs("{\"name\":");
  out_json_string(name);
  outs(",\"path\":");
  out_json_string(path);
  outf(",\"type\":\"%s\",\"size\":%lld,\"mode\":%u,\"mtime\":\"%s.%03ldZ\"", type, (long long)st->st_size,
       (unsigned)(st->st_mode & 07777), when, st->st_mtim.tv_nsec / 1000000);
  if (S_ISLNK(st->st_mode)) {
    char target[PATH_MAX];
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n >= 0) {
      target[n] = 0;
      outs(",\"symlinkTarget\":");
      out_json_string(target);
    }
  }
  outs(newline ? "}\n" : "}");
}

static void out_entry(const char *path, const char *name, const struct stat *st) { out_entry_(path, name, st, 1); }

static const char *base_name(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return path;
  if (slash[1] == 0) return path[0] == '/' && path[1] == 0 ? "/" : slash; /* trailing slash: leave as is */
  return slash + 1;
}

/* ------------------------------------------------------------------ ops */

static int cmd_read(const char *path) {
  int fd = open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) fail(errno, path);
  struct stat st;
  if (fstat(fd, &st) != 0) fail(errno, path);
  if (S_ISDIR(st.st_mode)) fail(EISDIR, path);
  if (!S_ISREG(st.st_mode)) fail(EINVAL, path); /* FIFOs and devices could block or never end */
  fcntl(fd, F_SETFL, 0);
  outf("{\"size\":%lld}\n", (long long)st.st_size);
  flush_out();
  for (;;) {
    ssize_t n = sendfile(1, fd, NULL, 1 << 20);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EINVAL || errno == ENOSYS) {
        char buf[1 << 16];
        ssize_t r;
        while ((r = read(fd, buf, sizeof buf)) > 0) {
          out(buf, (size_t)r);
          flush_out();
        }
        break;
      }
      return 1; /* the reader left: nothing to report */
    }
  }
  return 0;
}

static char tmp_path[PATH_MAX];

static void on_term(int sig) {
  (void)sig;
  if (tmp_path[0]) unlink(tmp_path);
  _exit(1);
}

static void mkdirs(char *path, mode_t mode) {
  /* Create each missing ancestor of `path` (a file path: the last part is not made). */
  for (char *p = path + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(path, mode) != 0 && errno != EEXIST) fail(errno, path);
    *p = '/';
  }
}

static int cmd_write(const char *path, const char *mode_text) {
  mode_t mode = (mode_t)strtol(mode_text, NULL, 8) & 07777;
  char target[PATH_MAX];
  if (strlen(path) >= sizeof target) fail(ENAMETOOLONG, path);
  strcpy(target, path);
  mkdirs(target, 0755);
  /* Write where a process writing to PATH would: through a symlink to its target. */
  char resolved[PATH_MAX];
  struct stat lst;
  if (lstat(target, &lst) == 0 && S_ISLNK(lst.st_mode)) {
    if (!realpath(target, resolved)) {
      /* A dangling link: write the file it names. */
      ssize_t n = readlink(target, resolved, sizeof resolved - 1);
      if (n < 0) fail(errno, target);
      resolved[n] = 0;
      if (resolved[0] != '/') {
        char joined[PATH_MAX];
        const char *slash = strrchr(target, '/');
        int dirlen = slash ? (int)(slash - target) : 0;
        if (snprintf(joined, sizeof joined, "%.*s/%s", dirlen, target, resolved) >= (int)sizeof joined) fail(ENAMETOOLONG, target);
        strcpy(resolved, joined);
      }
    }
    strcpy(target, resolved);
  }
  if (lstat(target, &lst) == 0 && S_ISDIR(lst.st_mode)) fail(EISDIR, target);
  /* Replace only what this user could write in place: a read-only file stays as it is. */
  if (lstat(target, &lst) == 0 && access(target, W_OK) != 0) fail(errno, target);
  const char *slash = strrchr(target, '/');
  int dirlen = slash ? (int)(slash - target) : 0;
  struct sigaction sa = {0};
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  sigaction(SIGPIPE, &sa, NULL);
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
    snprintf(tmp_path, sizeof tmp_path, "%.*s/.%s.agentbox-%d-%d", dirlen, target, base_name(target), (int)getpid(), attempt);
    fd = open(tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0 && errno != EEXIST) {
      int e = errno;
      tmp_path[0] = 0;
      fail(e, target);
    }
  }
  if (fd < 0) fail(EEXIST, target);
  long long total = 0;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = splice(0, NULL, fd, NULL, 1 << 20, SPLICE_F_MOVE);
    if (n < 0 && errno == EINVAL) n = -2; /* not spliceable: copy */
    if (n == -2) {
      ssize_t r = read(0, buf, sizeof buf);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) {
        int e = errno;
        unlink(tmp_path);
        tmp_path[0] = 0;
        fail(e, "stdin");
      }
      if (r == 0) break;
      for (ssize_t off = 0; off < r;) {
        ssize_t w = write(fd, buf + off, (size_t)(r - off));
        if (w < 0) {
          if (errno == EINTR) continue;
          int e = errno;
          unlink(tmp_path);
          tmp_path[0] = 0;
          fail(e, target);
        }
        off += w;
      }
      total += r;
      continue;
    }
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      unlink(tmp_path);
      tmp_path[0] = 0;
      fail(e, target);
    }
    total += n;
  }
  /* The mode as asked, whatever the umask made of it. */
  if (fchmod(fd, mode) != 0 || close(fd) != 0) {
    int e = errno;
    unlink(tmp_path);
    tmp_path[0] = 0;
    fail(e, target);
  }
  if (rename(tmp_path, target) != 0) {
    int e = errno;
    unlink(tmp_path);
    tmp_path[0] = 0;
    fail(e, target);
  }
  tmp_path[0] = 0;
  outf("{\"size\":%lld}\n", total);
  flush_out();
  return 0;
}

static int cmd_stat(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0) fail(errno, path);
  out_entry(path, base_name(path), &st);
  flush_out();
  return 0;
}

static long listed;
#define MAX_LISTED 100000

static void list_dir(const char *dir, int depth) {
  DIR *d = opendir(dir);
  if (!d) {
    if (listed == 0) fail(errno, dir);
    return; /* an unreadable subdirectory: its entry was listed, its content is not */
  }
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", e->d_name) >= (int)sizeof path) continue;
    struct stat st;
    if (lstat(path, &st) != 0) continue; /* gone meanwhile */
    if (++listed > MAX_LISTED) break;
    out_entry(path, e->d_name, &st);
    if (depth > 1 && S_ISDIR(st.st_mode)) list_dir(path, depth - 1);
  }
  closedir(d);
}

static int cmd_list(const char *path, const char *depth_text) {
  int depth = atoi(depth_text);
  if (depth < 1) depth = 1;
  struct stat st;
  if (stat(path, &st) != 0) fail(errno, path);
  if (!S_ISDIR(st.st_mode)) fail(ENOTDIR, path);
  listed = 0;
  DIR *probe = opendir(path);
  if (!probe) fail(errno, path);
  closedir(probe);
  list_dir(path, depth);
  flush_out();
  return 0;
}

static int cmd_mkdir(const char *path, const char *parents) {
  if (atoi(parents)) {
    char p[PATH_MAX + 2];
    if (snprintf(p, sizeof p, "%s/", path) >= (int)sizeof p) fail(ENAMETOOLONG, path);
    mkdirs(p, 0755);
    struct stat st;
    if (stat(path, &st) != 0) fail(errno, path);
    if (!S_ISDIR(st.st_mode)) fail(ENOTDIR, path);
    return 0;
  }
  if (mkdir(path, 0755) != 0) fail(errno, path);
  return 0;
}

static int cmd_move(const char *from, const char *to) {
  if (rename(from, to) != 0) fail(errno, from);
  return 0;
}

static int remove_tree(int parent, const char *name, const char *shown) {
  struct stat st;
  if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) != 0) fail(errno, shown);
  if (!S_ISDIR(st.st_mode)) {
    if (unlinkat(parent, name, 0) != 0) fail(errno, shown);
    return 0;
  }
  /* O_NOFOLLOW|O_DIRECTORY: a directory swapped for a symlink is not followed. */
  int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) fail(errno, shown);
  DIR *d = fdopendir(fd);
  if (!d) fail(errno, shown);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    remove_tree(dirfd(d), e->d_name, shown);
  }
  closedir(d);
  if (unlinkat(parent, name, AT_REMOVEDIR) != 0) fail(errno, shown);
  return 0;
}

static int cmd_remove(const char *path, const char *recursive) {
  struct stat st;
  if (lstat(path, &st) != 0) fail(errno, path);
  if (S_ISDIR(st.st_mode)) {
    if (!atoi(recursive)) {
      if (rmdir(path) != 0) fail(errno, path);
      return 0;
    }
    return remove_tree(AT_FDCWD, path, path);
  }
  if (unlink(path) != 0) fail(errno, path);
  return 0;
}

/* ------------------------------------------------------------------ watch */

#define MAX_WATCHES 8192
static char *watch_paths[MAX_WATCHES];
static int watch_ids[MAX_WATCHES];
static int nwatches;
static int recursive_watch;
static const uint32_t WATCH_MASK = IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB |
                                   IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;

static const char *watched_path(int wd) {
  for (int i = 0; i < nwatches; i++) if (watch_ids[i] == wd) return watch_paths[i];
  return NULL;
}

static void emit_event(const char *type, const char *path) {
  outs("{\"type\":\"");
  outs(type);
  outs("\",\"path\":");
  out_json_string(path);
  struct stat st;
  if (strcmp(type, "delete") != 0 && lstat(path, &st) == 0) {
    outs(",\"entry\":");
    out_entry_(path, base_name(path), &st, 0);
  }
  outs("}\n");
}

/*
 * Watch `path` and the directories under it, `depth_left` levels down. With `announce` (a
 * directory that appeared while watching) each entry found is reported as created: whatever
 * was made in it before its watch existed would otherwise be missed (a later event for the
 * same entry may report it twice; missing it would be worse).
 */
static void add_watch(int ifd, const char *path, int depth_left, int announce) {
  int wd = inotify_add_watch(ifd, path, WATCH_MASK);
  if (wd < 0) return;
  int slot = -1;
  for (int i = 0; i < nwatches; i++) if (watch_ids[i] == wd) slot = i;
  if (slot < 0) {
    if (nwatches >= MAX_WATCHES) return;
    slot = nwatches++;
  } else {
    free(watch_paths[slot]);
  }
  watch_ids[slot] = wd;
  watch_paths[slot] = strdup(path);
  if (depth_left <= 0) return;
  DIR *d = opendir(path);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (!announce && e->d_type != DT_DIR && e->d_type != DT_UNKNOWN) continue;
    char sub[PATH_MAX];
    if (snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) >= (int)sizeof sub) continue;
    if (announce) emit_event("create", sub);
    struct stat st;
    if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode)) add_watch(ifd, sub, depth_left - 1, announce);
  }
  closedir(d);
}

static void drop_slot(int i) {
  free(watch_paths[i]);
  watch_ids[i] = watch_ids[--nwatches];
  watch_paths[i] = watch_paths[nwatches];
}

/* The kernel dropped a watch (its directory is gone): free its slot for new directories. */
static void forget_watch(int wd) {
  for (int i = 0; i < nwatches; i++) {
    if (watch_ids[i] == wd) {
      drop_slot(i);
      return;
    }
  }
}

/*
 * After an overflow the kernel's word that a watch is gone may be lost: check each slot's path
 * by watching it again (the same watch: kept; another directory now: that one; none: dropped).
 */
static void prune_watches(int ifd) {
  for (int i = nwatches - 1; i > 0; i--) { /* slot 0 is the root: its end ends the watch */
    int wd = inotify_add_watch(ifd, watch_paths[i], WATCH_MASK);
    if (wd == watch_ids[i]) continue;
    inotify_rm_watch(ifd, watch_ids[i]);
    if (wd >= 0) watch_ids[i] = wd; /* another directory of that name now: watch it instead */
    else drop_slot(i);
  }
}

static int cmd_watch(const char *path, const char *recursive) {
  recursive_watch = atoi(recursive);
  struct stat st;
  if (stat(path, &st) != 0) fail(errno, path);
  if (!S_ISDIR(st.st_mode)) fail(ENOTDIR, path);
  int ifd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (ifd < 0) fail(errno, "inotify");
  add_watch(ifd, path, recursive_watch ? 64 : 0, 0);
  if (nwatches == 0) fail(errno, path); /* not even the directory itself (e.g. the kernel's watch limit) */
  int root = watch_ids[0];
  outs("{\"type\":\"ready\"}\n");
  flush_out();
  char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
  struct pollfd fds[2] = {{.fd = ifd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (fds[1].revents) {
      char c;
      ssize_t r = read(0, &c, 1);
      if (r <= 0) return 0; /* the runtime closed our stdin: stop */
    }
    if (!(fds[0].revents & POLLIN)) continue;
    ssize_t len = read(ifd, buf, sizeof buf);
    if (len <= 0) continue;
    for (char *p = buf; p < buf + len;) {
      struct inotify_event *ev = (struct inotify_event *)p;
      p += sizeof *ev + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) {
        outs("{\"type\":\"overflow\"}\n");
        prune_watches(ifd);
        continue;
      }
      if (ev->wd == root && (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF))) {
        /* The watched directory itself was removed or moved away: the watch is over. */
        emit_event(ev->mask & IN_DELETE_SELF ? "delete" : "rename", path);
        flush_out();
        return 0;
      }
      if (ev->mask & IN_IGNORED) {
        forget_watch(ev->wd);
        continue;
      }
      const char *dir = watched_path(ev->wd);
      if (!dir || ev->len == 0) continue;
      char full[PATH_MAX];
      if (snprintf(full, sizeof full, "%s/%s", dir, ev->name) >= (int)sizeof full) continue;
      if (ev->mask & (IN_CREATE)) {
        emit_event("create", full);
        if ((ev->mask & IN_ISDIR) && recursive_watch) add_watch(ifd, full, 63, 1);
      } else if (ev->mask & (IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB)) {
        emit_event("modify", full);
      } else if (ev->mask & IN_DELETE) {
        emit_event("delete", full);
      } else if (ev->mask & IN_MOVED_FROM) {
        emit_event("rename", full);
      } else if (ev->mask & IN_MOVED_TO) {
        emit_event("rename", full);
        if ((ev->mask & IN_ISDIR) && recursive_watch) add_watch(ifd, full, 63, 0);
      }
    }
    flush_out();
  }
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_DFL);
  umask(022);
  /* Bigger pipes to and from the runtime: fewer wake-ups per MiB moved (best effort). */
  fcntl(0, F_SETPIPE_SZ, 1 << 20);
  fcntl(1, F_SETPIPE_SZ, 1 << 20);
  /* A sandbox's namespace holder in images that have no `sleep`: wait until killed. */
  if (argc == 2 && !strcmp(argv[1], "hold")) {
    for (;;) pause();
  }
  if (argc < 3) {
    fprintf(stderr, "usage: agentbox-fs read|write|stat|list|mkdir|move|remove|watch PATH [ARG]\n");
    return 2;
  }
  const char *op = argv[1];
  if (!strcmp(op, "read")) return cmd_read(argv[2]);
  if (!strcmp(op, "write") && argc >= 4) return cmd_write(argv[2], argv[3]);
  if (!strcmp(op, "stat")) return cmd_stat(argv[2]);
  if (!strcmp(op, "list") && argc >= 4) return cmd_list(argv[2], argv[3]);
  if (!strcmp(op, "mkdir") && argc >= 4) return cmd_mkdir(argv[2], argv[3]);
  if (!strcmp(op, "move") && argc >= 4) return cmd_move(argv[2], argv[3]);
  if (!strcmp(op, "remove") && argc >= 4) return cmd_remove(argv[2], argv[3]);
  if (!strcmp(op, "watch") && argc >= 4) return cmd_watch(argv[2], argv[3]);
  fprintf(stderr, "agentbox-fs: bad arguments for %s\n", op);
  return 2;
}
