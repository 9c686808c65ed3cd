/*
 * dt-vpcd-nodelay: an LD_PRELOAD shim for pcscd that turns on TCP_NODELAY on
 * every TCP socket the process accepts or connects, so that the vsmartcard
 * vpcd reader driver (libifdvpcd.so, loaded by pcscd) stops paying a delayed
 * ACK on every APDU.
 *
 * Why: vpcd 0.8 (Debian's vsmartcard-vpcd 3.3) sends each command to the card
 * as two send() calls, the 2-byte length and then the APDU, on a socket
 * without TCP_NODELAY. Nagle's algorithm holds the APDU until the card side
 * has ACKed the length, and the card side (it has nothing to answer before it
 * has the whole APDU) delays that ACK: about 40 ms per APDU on Linux. With
 * TCP_NODELAY both segments leave at once. Upstream vsmartcard sends length
 * and APDU in one buffer since 0.9; this shim gives the packaged driver the
 * same behaviour without rebuilding it.
 *
 * What: accept(), accept4() and connect() are wrapped (the driver calls
 * accept() when it listens for the card, connect() when it is configured to
 * reach out to it). After the real call, a socket of family AF_INET/AF_INET6
 * and protocol TCP gets TCP_NODELAY; anything else (pcscd's own Unix socket,
 * netlink) is left alone. Errors are ignored and errno is preserved: the shim
 * can make a socket faster, never make a call fail.
 *
 * With DT_VPCD_NODELAY_LOG set in the environment it writes one line to
 * stderr when it is loaded and one per socket it changed (file descriptor and
 * local port, read back with getsockopt), so that a test can prove it works.
 *
 * Built by `npm run setup` (scripts/setup.sh) with the machine's C compiler:
 *   cc -O2 -fPIC -shared -o build/libdt-vpcd-nodelay.so vpcd-nodelay.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

typedef int (*accept_fn)(int, struct sockaddr *, socklen_t *);
typedef int (*accept4_fn)(int, struct sockaddr *, socklen_t *, int);
typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);

static int log_enabled;

__attribute__((constructor)) static void dt_vpcd_nodelay_init(void) {
  log_enabled = getenv("DT_VPCD_NODELAY_LOG") != NULL;
  if (log_enabled) fprintf(stderr, "dt-vpcd-nodelay: loaded in pid %ld\n", (long)getpid());
}

static unsigned local_port(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return 0;
}

/* Sets TCP_NODELAY on fd when it is a TCP socket; keeps errno as the caller left it. */
static void nodelay(int fd, const char *how) {
  if (fd < 0) return;
  int saved = errno;
  int domain = 0, protocol = 0, one = 1, check = 0;
  socklen_t len = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && (domain == AF_INET || domain == AF_INET6)) {
    len = sizeof protocol;
    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) == 0 && protocol == IPPROTO_TCP &&
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0 && log_enabled) {
      len = sizeof check;
      if (getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &check, &len) == 0 && check != 0) {
        fprintf(stderr, "dt-vpcd-nodelay: TCP_NODELAY on fd %d (%s, local port %u)\n", fd, how, local_port(fd));
      }
    }
  }
  errno = saved;
}

int accept(int fd, struct sockaddr *addr, socklen_t *addrlen) {
  static accept_fn real;
  if (!real) real = (accept_fn)dlsym(RTLD_NEXT, "accept");
  if (!real) {
    errno = ENOSYS;
    return -1;
  }
  int s = real(fd, addr, addrlen);
  nodelay(s, "accepted");
  return s;
}

int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags) {
  static accept4_fn real;
  if (!real) real = (accept4_fn)dlsym(RTLD_NEXT, "accept4");
  if (!real) {
    errno = ENOSYS;
    return -1;
  }
  int s = real(fd, addr, addrlen, flags);
  nodelay(s, "accepted");
  return s;
}

int connect(int fd, const struct sockaddr *addr, socklen_t addrlen) {
  static connect_fn real;
  if (!real) real = (connect_fn)dlsym(RTLD_NEXT, "connect");
  if (!real) {
    errno = ENOSYS;
    return -1;
  }
  int r = real(fd, addr, addrlen);
  /* Also after EINPROGRESS (non-blocking connect): the option applies once connected. */
  if (r == 0 || errno == EINPROGRESS) nodelay(fd, "connected");
  return r;
}
