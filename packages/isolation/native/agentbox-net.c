/*
 * agentbox-net: the network helper: it relays sockets for the runtime, and connects to
 * exposed ports inside sandboxes (static, so it runs on any image; the runtime starts it from
 * a host descriptor, never from the sandbox's files).
 *
 *   agentbox-net relay FD_A FD_B
 *       Relay two connected sockets it was given (by the runtime's spawner, from the egress
 *       proxy) until both directions end; print "A_TO_B B_TO_A" byte counts on stdout.
 *   agentbox-net relay-n FD_A FD_B N
 *       Move exactly N bytes from FD_B to FD_A (the rest of a big HTTP response body, or of a
 *       file going to or from the files API) and print the count moved. Both ends stay
 *       non-blocking: their owner's event loop may keep reading FD_A.
 *   agentbox-net connect PORT
 *       Connect to 127.0.0.1:PORT (then [::1]:PORT) inside the sandbox and relay it to
 *       stdin/stdout: one connection to an exposed port. Prints "connected" on stderr once
 *       the connection is up; exits 111 with a message if nothing listens there.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define BUF_SIZE (256 * 1024)

/* Bytes moved a → b and b → a by relay(). */
static long long moved_ab, moved_ba;

static int parse_port(const char *text) {
  char *end;
  long port = strtol(text, &end, 10);
  if (*text == '\0' || *end != '\0' || port < 1 || port > 65535) return -1;
  return (int)port;
}

static int write_all(int fd, const char *buf, ssize_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, (size_t)len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    buf += n;
    len -= n;
  }
  return 0;
}

/* End the write side of fd: a socket is shut down (its reader sees EOF, its other half lives),
 * a pipe is closed. */
static void end_output(int fd, int is_socket) {
  if (is_socket) shutdown(fd, SHUT_WR);
  else close(fd);
}

/*
 * Move what is readable on `in` to `out` through `pipe_fds` with splice (no copy through user
 * space). Returns bytes moved, 0 at end of input, -1 on error (errno set), -2 if splice cannot
 * be used on these descriptors (the caller falls back to read/write).
 */
static ssize_t splice_once(int in, int out, int pipe_fds[2]) {
  ssize_t n = splice(in, NULL, pipe_fds[1], NULL, BUF_SIZE, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  if (n < 0) return errno == EINVAL ? -2 : -1;
  for (ssize_t left = n; left > 0;) {
    ssize_t w = splice(pipe_fds[0], NULL, out, NULL, (size_t)left, SPLICE_F_MOVE);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    left -= w;
  }
  return n;
}

/* One direction of a relay: read what is there and write all of it. */
static ssize_t move_once(int in, int out, int pipe_fds[2], int *use_splice, char *buf) {
  if (*use_splice) {
    ssize_t n = splice_once(in, out, pipe_fds);
    if (n != -2) return n;
    *use_splice = 0;
  }
  ssize_t n = read(in, buf, BUF_SIZE);
  if (n > 0 && write_all(out, buf, n) < 0) return -1;
  return n;
}

/*
 * One readable direction of a relay: move what is there and count it; at the end of its input,
 * pass the end on and mark it closed. Returns 0 to go on, 1 to poll again at once (interrupted),
 * -1 when a read or write failed (the connection is gone).
 */
static int relay_step(int in, int out, int out_socket, int pipe_fds[2], int *use_splice, char *buf, long long *moved, int *open) {
  ssize_t n = move_once(in, out, pipe_fds, use_splice, buf);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return 1;
  if (n > 0) {
    *moved += n;
    return 0;
  }
  *open = 0;
  end_output(out, out_socket);
  return n < 0 ? -1 : 0;
}

/*
 * Copy a_in → b_out and b_in → a_out until both directions reach end of input.
 * An end of input in one direction is passed on as an end of output, so half-closed
 * connections (an HTTP client that shuts down after its request) work.
 */
static void relay(int a_in, int a_out, int a_socket, int b_in, int b_out, int b_socket) {
  char *buf = malloc(BUF_SIZE);
  int ab[2], ba[2];
  if (!buf || pipe2(ab, O_CLOEXEC) < 0 || pipe2(ba, O_CLOEXEC) < 0) return;
  fcntl(ab[1], F_SETPIPE_SZ, BUF_SIZE);
  fcntl(ba[1], F_SETPIPE_SZ, BUF_SIZE);
  int splice_ab = 1, splice_ba = 1;
  int a_open = 1, b_open = 1;
  while (a_open || b_open) {
    struct pollfd fds[2] = {{a_open ? a_in : -1, POLLIN, 0}, {b_open ? b_in : -1, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    int r = 0;
    if (a_open && fds[0].revents) r = relay_step(a_in, b_out, b_socket, ab, &splice_ab, buf, &moved_ab, &a_open);
    if (r == 1) continue;
    if (r < 0) break;
    if (b_open && fds[1].revents) r = relay_step(b_in, a_out, a_socket, ba, &splice_ba, buf, &moved_ba, &b_open);
    if (r < 0) break;
  }
  free(buf);
}

static int cmd_connect(int port) {
  int fd = -1;
  struct sockaddr_in v4;
  memset(&v4, 0, sizeof v4);
  v4.sin_family = AF_INET;
  v4.sin_port = htons((uint16_t)port);
  v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct sockaddr_in6 v6;
  memset(&v6, 0, sizeof v6);
  v6.sin6_family = AF_INET6;
  v6.sin6_port = htons((uint16_t)port);
  v6.sin6_addr = in6addr_loopback;
  fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&v4, sizeof v4) < 0) {
    if (fd >= 0) close(fd);
    fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&v6, sizeof v6) < 0) {
      fprintf(stderr, "nothing listens on port %d inside the sandbox (%s)\n", port, strerror(errno));
      return 111;
    }
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fprintf(stderr, "connected\n");
  relay(0, 1, 0, fd, fd, 1);
  return 0;
}

static int cmd_relay(int a, int b) {
  /* The sockets come from an event loop that made them non-blocking; the relay blocks. */
  fcntl(a, F_SETFL, fcntl(a, F_GETFL) & ~O_NONBLOCK);
  fcntl(b, F_SETFL, fcntl(b, F_GETFL) & ~O_NONBLOCK);
  relay(a, a, 1, b, b, 1);
  printf("%lld %lld\n", moved_ab, moved_ba);
  return 0;
}

/* relay-n was asked to stop (SIGTERM): it reports how many bytes it took and exits. */
static volatile sig_atomic_t stopping = 0;
static void on_term(int sig) {
  (void)sig;
  stopping = 1;
}

/* Wait until fd is ready for `events` (both sockets stay non-blocking: their owner's event loop
   may read them), or until asked to stop. */
static void wait_for(int fd, short events) {
  struct pollfd p = {fd, events, 0};
  while (poll(&p, 1, -1) < 0 && errno == EINTR && !stopping) {}
}

/* Write all of buf to a non-blocking fd, waiting for room. */
static int write_all_waiting(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t w = write(fd, buf, len);
    if (w < 0 && errno == EAGAIN && !stopping) {
      wait_for(fd, POLLOUT);
      continue;
    }
    if (w < 0 && errno == EINTR && !stopping) continue;
    if (w <= 0) return -1;
    buf += w;
    len -= (size_t)w;
  }
  return 0;
}

/*
 * Move up to `want` bytes from socket b to a with recv and write. Returns the count, 0 at the
 * end of b (or when b is a pipe, whose splice answers 0 only there), -2 when nothing is there
 * yet (after waiting for some), -1 on an error.
 */
static ssize_t copy_some(int a, int b, size_t want, long long *taken) {
  static char buf[65536];
  ssize_t k = recv(b, buf, want < sizeof buf ? want : sizeof buf, MSG_DONTWAIT);
  if (k < 0 && errno == ENOTSOCK) return 0;
  if (k > 0) *taken += k;
  if (k < 0 && errno == EAGAIN) {
    wait_for(b, POLLIN);
    return -2;
  }
  if (k < 0 && errno == EINTR) return -2;
  if (k < 0) {
    fprintf(stderr, "relay-n: read: %s\n", strerror(errno));
    return -1;
  }
  if (k > 0 && write_all_waiting(a, buf, (size_t)k) != 0) {
    fprintf(stderr, "relay-n: write: %s\n", strerror(errno));
    return -1;
  }
  return k;
}

/*
 * Prints the bytes moved; when stopped by SIGTERM (its owner saw the other side give up, e.g. a
 * file helper that hit the storage limit while its pipe stays open), the bytes taken from FD_B
 * instead, so that the owner knows how much of the stream is still unread.
 */
static int cmd_relay_n(int a, int b, long long n) {
  int p[2];
  long long moved = 0, taken = 0;
  struct sigaction term = {0};
  term.sa_handler = on_term; /* no SA_RESTART: a blocked poll returns */
  sigaction(SIGTERM, &term, NULL);
  if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return 1;
  fcntl(p[1], F_SETPIPE_SZ, BUF_SIZE);
  int failed = 0;
  while (!failed && !stopping && moved < n) {
    size_t want = (size_t)(n - moved < BUF_SIZE ? n - moved : BUF_SIZE);
    ssize_t r = splice(b, NULL, p[1], NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (r < 0 && errno == EAGAIN) {
      wait_for(b, POLLIN);
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) {
      /* TCP's splice also answers 0 when what is queued cannot be spliced (it does not loop
         on such data): only recv tells that from the end of the stream. */
      r = copy_some(a, b, want, &taken);
      if (r == -2) continue;
      if (r < 0) failed = 1;
      else moved += r;
      if (r <= 0) break;
      continue;
    }
    if (r < 0) {
      fprintf(stderr, "relay-n: read: %s\n", strerror(errno));
      break;
    }
    taken += r;
    for (ssize_t left = r; left > 0;) {
      ssize_t w = splice(p[0], NULL, a, NULL, (size_t)left, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (w < 0 && errno == EAGAIN && !stopping) {
        wait_for(a, POLLOUT);
        continue;
      }
      if (w < 0 && errno == EINTR && !stopping) continue;
      if (w <= 0) {
        if (w < 0 && !stopping) fprintf(stderr, "relay-n: write: %s\n", strerror(errno));
        failed = 1;
        break;
      }
      left -= w;
    }
    if (!failed) moved += r;
  }
  printf("%lld\n", stopping ? taken : moved);
  return moved == n ? 0 : 1;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc == 5 && !strcmp(argv[1], "relay-n")) return cmd_relay_n(atoi(argv[2]), atoi(argv[3]), atoll(argv[4]));
  if (argc == 4 && !strcmp(argv[1], "relay")) return cmd_relay(atoi(argv[2]), atoi(argv[3]));
  if (argc == 3 && !strcmp(argv[1], "connect")) {
    int port = parse_port(argv[2]);
    if (port < 0) return 2;
    return cmd_connect(port);
  }
  fprintf(stderr, "usage: agentbox-net relay FD_A FD_B | relay-n FD_A FD_B N | connect PORT\n");
  return 2;
}
