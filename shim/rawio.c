/* Raw output and small utilities shared by the shim and the tool. Nothing here allocates except
 * the ls_buf functions, which are only used by reporters (never in a signal handler). */
#include "leakshim.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
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
