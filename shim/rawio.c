/* Raw output and small utilities shared by the shim and the tool. Nothing here allocates except
 * the ls_buf functions, which are only used by reporters (never in a signal handler). */
#include "ls_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <sys/uio.h>
#include <unistd.h>

LS_TLS int ls_in_shim;

double ls_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double ls_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Async-signal-safe: the raw syscall never reaches any close hook (ours or another preload's). */
int ls_sys_close(int fd)
{
    return (int)syscall(SYS_close, fd);
}

/* A whole small file (/proc): up to cap bytes into buf, no NUL added; the byte count, or -1 if it
 * cannot be opened. The fd is closed with the raw syscall. */
ssize_t ls_read_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t n = 0;
    while (n < cap) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    ls_sys_close(fd);
    return (ssize_t)n;
}

/* Reads n bytes of our own memory without faulting on an address that is not mapped; errno is
 * left as it was. -1 where process_vm_readv is refused (seccomp) too: callers only probe. */
int ls_read_self(const void *addr, void *out, size_t n)
{
    int e = errno;
    struct iovec local = {out, n}, remote = {(void *)addr, n};
    ssize_t r = syscall(SYS_process_vm_readv, (pid_t)syscall(SYS_getpid), &local, 1UL, &remote, 1UL, 0UL);
    errno = e;
    return r == (ssize_t)n ? 0 : -1;
}

/* Async-signal-safe. A report written into a pipe whose reader is gone must not kill the host
 * with SIGPIPE: the signal is blocked on this thread for the write, and the one our write raised
 * is taken back (unless one was already pending, which stays the host's). */
int ls_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    int ret = 0;
    sigset_t pipe_set, old, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    int was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            ret = -1;
            break;
        }
        p += n;
        len -= (size_t)n;
    }
    int e = errno;
    if (ret < 0 && e == EPIPE && !was_pending) {
        struct timespec zero = {0, 0};
        sigtimedwait(&pipe_set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = e;
    return ret;
}

/* ------------------------------------------------------------------ the host's fds
 * The reporter thread has an fd table of its own (unshare(CLONE_FILES), see reporter.c): nothing
 * it opens can take a number the host is about to be given. There, a host fd is reached through
 * pidfd_getfd, as a private duplicate; everywhere else the number is used as it is. */
LS_TLS int ls_fds_private;
int ls_self_pidfd = -1;

int ls_host_fd(int fd)
{
    if (LS_LIKELY(!ls_fds_private))
        return fd;
    return (int)syscall(SYS_pidfd_getfd, ls_self_pidfd, fd, 0U);
}

/* got is a private duplicate on the reporter thread (whatever its number): close it there. */
void ls_host_fd_done(int fd, int got)
{
    (void)fd;
    if (ls_fds_private && got >= 0)
        ls_sys_close(got);
}

/* fstat of the host's fd (a path lookup, no duplicate, from the reporter thread). */
int ls_host_fstat(int fd, struct stat *st)
{
    if (LS_LIKELY(!ls_fds_private))
        return fstat(fd, st);
    char path[40];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return stat(path, st);
}

/* ------------------------------------------------------------------ many host fds (snapshots)
 * Measured on the reporter thread (19k sockets, this project's VM): stat("/proc/self/fd/N") 5-9 us
 * (a path walk through procfs, a dentry made per fd), fstatat on an open /proc/self/fd 3-3.4 us,
 * readlinkat there 3.2-3.6 us, pidfd_getfd + fstat + close 2.4-2.9 us, and pidfd_getfd + fstat
 * with the duplicates closed by one close_range per 256: 2.2-2.6 us. A thread sharing the host's
 * table does it with one fstat (0.6-0.9 us). */

static void hostfds_flush(ls_hostfds *b)
{
    /* Duplicates are handed the lowest free numbers, so they come in runs of consecutive numbers
     * (broken only where this thread's own fds sit): one close_range per run. */
    int i = 0;
    while (i < b->ndups) {
        int j = i;
        while (j + 1 < b->ndups && b->dups[j + 1] == b->dups[j] + 1)
            j++;
        if (syscall(SYS_close_range, (unsigned)b->dups[i], (unsigned)b->dups[j], 0U) != 0)
            for (int k = i; k <= j; k++)
                ls_sys_close(b->dups[k]);
        i = j + 1;
    }
    if (b->ndups)
        b->flushes++;
    b->ndups = 0;
}

static int sock_ino(const struct stat *st, uint64_t *ino)
{
    if (!S_ISSOCK(st->st_mode))
        return 0;
    *ino = (uint64_t)st->st_ino;
    return 1;
}

int ls_hostfds_sock(ls_hostfds *b, int n, uint64_t *ino, int *usable)
{
    struct stat st;
    *usable = -1;
    if (LS_LIKELY(!ls_fds_private)) {
        if (fstat(n, &st) != 0 || !sock_ino(&st, ino))
            return 0;
        *usable = n;
        return 1;
    }
    if (b->ndups == LS_HOSTFDS_BATCH)
        hostfds_flush(b);
    int d = ls_self_pidfd < 0 ? -1 : (int)syscall(SYS_pidfd_getfd, ls_self_pidfd, n, 0U);
    if (d < 0 && errno == EMFILE && b->ndups) { /* our own table is full: make room */
        hostfds_flush(b);
        d = (int)syscall(SYS_pidfd_getfd, ls_self_pidfd, n, 0U);
    }
    if (d < 0) {
        if (ls_self_pidfd >= 0 && errno == EBADF)
            return 0; /* closed */
        /* no pidfd, or a failure of ours: the slow path still answers (and needs no fd) */
        return ls_host_fstat(n, &st) == 0 && sock_ino(&st, ino);
    }
    b->dups[b->ndups++] = d;
    if (fstat(d, &st) != 0 || !sock_ino(&st, ino))
        return 0;
    *usable = d;
    return 1;
}

void ls_hostfds_end(ls_hostfds *b)
{
    hostfds_flush(b);
}

int ls_write_host(int fd, const void *buf, size_t len)
{
    int h = ls_host_fd(fd);
    if (h < 0)
        return -1;
    int r = ls_write_all(h, buf, len);
    int e = errno;
    ls_host_fd_done(fd, h);
    errno = e;
    return r;
}

void ls_warn(const char *fmt, ...)
{
    int saved = errno;
    char line[512];
    int n = snprintf(line, sizeof line, "leakshim: ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    ls_write_host(2, line, len);
    errno = saved;
}

static int buf_reserve(ls_buf *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->oom = 1;
        return -1;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

void ls_buf_printf(ls_buf *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_reserve(b, (size_t)n) < 0)
        return;
    if ((size_t)n < sizeof small) {
        memcpy(b->data + b->len, small, (size_t)n + 1);
    } else {
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

void ls_buf_puts(ls_buf *b, const char *s)
{
    size_t n = strlen(s);
    if (buf_reserve(b, n) < 0)
        return;
    memcpy(b->data + b->len, s, n + 1);
    b->len += n;
}

static void buf_put(ls_buf *b, const char *s, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
}

/* Fixed-point without printf's floating-point path (hot in 100k-socket dumps). */
void ls_buf_fixed(ls_buf *b, double v, int decimals)
{
    static const long long pow10[] = {1, 10, 100, 1000, 10000, 100000, 1000000};
    if (decimals < 0 || decimals > 6 || !(v == v) || v > 9e15 || v < -9e15) {
        ls_buf_printf(b, "%.*f", decimals, v);
        return;
    }
    char tmp[48];
    int neg = v < 0;
    long long scaled = (long long)((neg ? -v : v) * (double)pow10[decimals] + 0.5);
    long long ip = scaled / pow10[decimals], fp = scaled % pow10[decimals];
    char *p = tmp + sizeof tmp;
    for (int i = 0; i < decimals; i++, fp /= 10)
        *--p = (char)('0' + fp % 10);
    if (decimals)
        *--p = '.';
    do
        *--p = (char)('0' + ip % 10);
    while ((ip /= 10) > 0);
    if (neg)
        *--p = '-';
    buf_put(b, p, (size_t)(tmp + sizeof tmp - p));
}

void ls_buf_json_str(ls_buf *b, const char *s)
{
    if (!s) {
        ls_buf_puts(b, "null");
        return;
    }
    size_t n = 0; /* fast path: nothing to escape */
    while (s[n] && s[n] != '"' && s[n] != '\\' && (unsigned char)s[n] >= 0x20)
        n++;
    if (!s[n]) {
        buf_put(b, "\"", 1);
        buf_put(b, s, n);
        buf_put(b, "\"", 1);
        return;
    }
    ls_buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': ls_buf_puts(b, "\\\""); break;
        case '\\': ls_buf_puts(b, "\\\\"); break;
        case '\n': ls_buf_puts(b, "\\n"); break;
        case '\t': ls_buf_puts(b, "\\t"); break;
        case '\r': ls_buf_puts(b, "\\r"); break;
        default:
            if (*p < 0x20)
                ls_buf_printf(b, "\\u%04x", *p);
            else {
                char c[2] = {(char)*p, 0};
                ls_buf_puts(b, c);
            }
        }
    }
    ls_buf_puts(b, "\"");
}

void ls_buf_free(ls_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* ------------------------------------------------------------------ printf-free formatting
 * A snapshot renders a few lines per live socket: through snprintf and inet_ntop (which itself
 * sprintf's each IPv6 group) two addresses cost ~5,600 instructions, a third of a 20k-socket JSON
 * dump (callgrind). These write the same text directly. */

void ls_buf_put(ls_buf *b, const char *s, size_t n)
{
    buf_put(b, s, n);
}

void ls_buf_u64(ls_buf *b, uint64_t v)
{
    char tmp[20], *p = tmp + sizeof tmp;
    do
        *--p = (char)('0' + v % 10);
    while ((v /= 10) > 0);
    buf_put(b, p, (size_t)(tmp + sizeof tmp - p));
}

void ls_buf_i64(ls_buf *b, int64_t v)
{
    if (v < 0) {
        buf_put(b, "-", 1);
        ls_buf_u64(b, (uint64_t)0 - (uint64_t)v); /* INT64_MIN too */
    } else {
        ls_buf_u64(b, (uint64_t)v);
    }
}

/* %#lx: "0" for 0, else "0x" and lower-case digits. */
void ls_buf_hex(ls_buf *b, uint64_t v)
{
    char tmp[18], *p = tmp + sizeof tmp;
    if (!v) {
        buf_put(b, "0", 1);
        return;
    }
    for (; v; v >>= 4)
        *--p = "0123456789abcdef"[v & 15];
    *--p = 'x';
    *--p = '0';
    buf_put(b, p, (size_t)(tmp + sizeof tmp - p));
}

static char *put_u(char *p, unsigned v)
{
    char tmp[10], *t = tmp + sizeof tmp;
    do
        *--t = (char)('0' + v % 10);
    while ((v /= 10) > 0);
    while (t < tmp + sizeof tmp)
        *p++ = *t++;
    return p;
}

static char *put_ipv4(char *p, const unsigned char a[4])
{
    for (int i = 0; i < 4; i++) {
        if (i)
            *p++ = '.';
        p = put_u(p, a[i]);
    }
    return p;
}

/* glibc's inet_ntop, character for character: the longest run of two or more zero groups (the
 * first of equal runs) becomes "::", groups in lower-case hex without leading zeros, and
 * IPv4-compatible (::a.b.c.d) and IPv4-mapped (::ffff:a.b.c.d) addresses end in dotted quads. */
static char *put_ipv6(char *p, const unsigned char a[16])
{
    unsigned w[8];
    int best = -1, bestlen = 0, cur = -1, curlen = 0;
    for (int i = 0; i < 8; i++) {
        w[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
        if (w[i] == 0) {
            if (cur < 0)
                cur = i, curlen = 0;
            curlen++;
        }
        if ((w[i] != 0 || i == 7) && cur >= 0) {
            if (best < 0 || curlen > bestlen)
                best = cur, bestlen = curlen;
            cur = -1;
        }
    }
    if (bestlen < 2)
        best = -1;
    for (int i = 0; i < 8; i++) {
        if (best >= 0 && i >= best && i < best + bestlen) {
            if (i == best)
                *p++ = ':';
            continue;
        }
        if (i)
            *p++ = ':';
        if (i == 6 && best == 0 && (bestlen == 6 || (bestlen == 5 && w[5] == 0xffff)))
            return put_ipv4(p, a + 12);
        int shift = w[i] >= 0x1000 ? 12 : w[i] >= 0x100 ? 8 : w[i] >= 0x10 ? 4 : 0;
        for (; shift >= 0; shift -= 4)
            *p++ = "0123456789abcdef"[(w[i] >> shift) & 15];
    }
    if (best >= 0 && best + bestlen == 8)
        *p++ = ':';
    return p;
}

size_t ls_addr_format(char *out, size_t cap, const struct sockaddr_storage *ss, socklen_t len)
{
    char tmp[8 + sizeof(((struct sockaddr_un *)0)->sun_path) + 16], *p = tmp;
    const char *src = tmp;
    size_t n;
    if (len == 0) {
        *p++ = '?';
    } else if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        p = put_ipv4(p, (const unsigned char *)&in->sin_addr);
        *p++ = ':';
        p = put_u(p, ntohs(in->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in = (const struct sockaddr_in6 *)ss;
        *p++ = '[';
        p = put_ipv6(p, in->sin6_addr.s6_addr);
        *p++ = ']';
        *p++ = ':';
        p = put_u(p, ntohs(in->sin6_port));
    } else if (ss->ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)ss;
        size_t max = len > offsetof(struct sockaddr_un, sun_path) ? len - offsetof(struct sockaddr_un, sun_path) : 0;
        if (max > sizeof un->sun_path)
            max = sizeof un->sun_path;
        if (max && !un->sun_path[0]) { /* abstract: "@name", up to its first NUL */
            *p++ = '@';
            n = strnlen(un->sun_path + 1, max - 1);
            memcpy(p, un->sun_path + 1, n);
            p += n;
        } else { /* a path, up to its NUL: copied from where it is */
            src = un->sun_path;
            n = strnlen(un->sun_path, max);
            goto out;
        }
    } else {
        memcpy(p, "family ", 7);
        p = put_u(p + 7, ss->ss_family);
    }
    n = (size_t)(p - src);
out:
    if (cap == 0)
        return 0;
    if (n > cap - 1)
        n = cap - 1;
    memmove(out, src, n);
    out[n] = 0;
    return n;
}

void ls_buf_addr(ls_buf *b, const struct sockaddr_storage *ss, socklen_t len)
{
    char tmp[160];
    size_t n = ls_addr_format(tmp, sizeof tmp, ss, len);
    buf_put(b, tmp, n);
}
