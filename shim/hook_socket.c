/* Socket lifetime hooks: socket, connect, and every way an fd dies, moves or is duplicated.
 * Each hook: resolve, guard, call the real function, hand the facts to the registry. Return value
 * and errno of the real call are passed through untouched. */
#include "ls_hook.h"
#include "ls_got.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>
#include <fcntl.h>
#include <linux/close_range.h>

#define REAL(fn) real_##fn
#define RESOLVE(fn) LS_RESOLVE(fn)
#define REQUIRE(fn, failval) LS_REQUIRE(fn, failval)

static int (*real_socket)(int, int, int);
static int (*real_connect)(int, const struct sockaddr *, socklen_t);
static int (*real_close)(int);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static int (*real_fcntl)(int, int, ...);
static int (*real_fcntl64)(int, int, ...);
static int (*real_close_range)(unsigned, unsigned, int);
static void (*real_closefrom)(int);
static int (*real_fclose)(FILE *);
static pid_t (*real_fork)(void);
static ssize_t (*real_send)(int, const void *, size_t, int);
static ssize_t (*real_sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);

LEAKSHIM_EXPORT int socket(int domain, int type, int protocol)
{
    REQUIRE(socket, -1);
    int fd = REAL(socket)(domain, type, protocol);
    if (fd >= 0 && !ls_in_shim) {
        int e = errno;
        ls_on_socket_new(fd); /* lock-free unless the number was closed behind our back */
        errno = e;
    }
    return fd;
}

LEAKSHIM_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    REQUIRE(connect, -1);
    if (ls_in_shim)
        return REAL(connect)(fd, addr, len);
    ls_init();
    int ret = REAL(connect)(fd, addr, len);
    /* A non-blocking or interrupted connect goes on in the kernel: the socket is live. */
    if (ret == 0 || errno == EINPROGRESS || errno == EINTR)
        LS_RECORD(ls_on_connect(fd, addr, len));
    return ret;
}

LEAKSHIM_EXPORT int close(int fd)
{
    REQUIRE(close, -1);
    if (!ls_in_shim && LS_UNLIKELY(ls_fd_tracked(fd)))
        LS_RECORD(ls_on_close(fd)); /* forget before the number can be handed out again */
    return REAL(close)(fd);
}

static int after_dup(int oldfd, int ret)
{
    if (ret >= 0 && !ls_in_shim) {
        LS_RECORD(ls_on_dup(oldfd, ret));
    }
    return ret;
}

LEAKSHIM_EXPORT int dup(int fd)
{
    REQUIRE(dup, -1);
    return after_dup(fd, REAL(dup)(fd));
}

/* dup2/dup3 replace newfd atomically, so recording after the call leaves no window. */
LEAKSHIM_EXPORT int dup2(int oldfd, int newfd)
{
    REQUIRE(dup2, -1);
    return after_dup(oldfd, REAL(dup2)(oldfd, newfd));
}

LEAKSHIM_EXPORT int dup3(int oldfd, int newfd, int flags)
{
    REQUIRE(dup3, -1);
    return after_dup(oldfd, REAL(dup3)(oldfd, newfd, flags));
}

/* fcntl's third argument is an int or a pointer depending on cmd; like glibc, take it as a
 * pointer-sized value and pass it on unchanged. */
#define FCNTL_BODY(fn)                                                                                                 \
    va_list ap;                                                                                                        \
    va_start(ap, cmd);                                                                                                 \
    void *arg = va_arg(ap, void *);                                                                                    \
    va_end(ap);                                                                                                        \
    REQUIRE(fn, -1);                                                                                                   \
    int ret = REAL(fn)(fd, cmd, arg);                                                                                  \
    if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)                                                                      \
        return after_dup(fd, ret);                                                                                     \
    return ret;

LEAKSHIM_EXPORT int fcntl(int fd, int cmd, ...){FCNTL_BODY(fcntl)}

LEAKSHIM_EXPORT int fcntl64(int fd, int cmd, ...){FCNTL_BODY(fcntl64)}

/* Forget-before-close only for closes that will happen: flags the kernel refuses (EINVAL) or
 * CLOSE_RANGE_CLOEXEC (closes at exec, not now) close nothing now. */
LEAKSHIM_EXPORT int close_range(unsigned first, unsigned last, int flags)
{
    REQUIRE(close_range, -1);
    unsigned known = CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC;
    if (!ls_in_shim && first <= last && !((unsigned)flags & ~known) && !(flags & CLOSE_RANGE_CLOEXEC)) {
        LS_RECORD(ls_on_close_range(first, last));
    }
    return REAL(close_range)(first, last, flags);
}

LEAKSHIM_EXPORT void closefrom(int lowfd)
{
    RESOLVE(closefrom);
    if (!real_closefrom) {
        ls_missing_symbol("closefrom");
        return;
    }
    if (!ls_in_shim && lowfd >= 0) {
        LS_RECORD(ls_on_close_range((unsigned)lowfd, ~0u));
    }
    REAL(closefrom)(lowfd);
}

/* fclose of an fdopen'ed socket closes the fd inside libc, where no close hook sees it. */
LEAKSHIM_EXPORT int fclose(FILE *fp)
{
    REQUIRE(fclose, EOF);
    if (!ls_in_shim && fp) {
        LS_RECORD({
            int fd = fp->_fileno; /* fileno() without a call: glibc's FILE, -1 if no fd */
            if (fd >= 0 && ls_fd_tracked(fd))
                ls_on_close(fd);
        });
    }
    return REAL(fclose)(fp);
}

/* Resolved up front (before main), so a hook's first call does not run dlsym on the host's stack
 * (a small thread stack, a signal handler); hooks still resolve lazily if they run earlier. Read
 * from the GNU hash tables (ls_real_symbols): 17 dlsym calls were a tenth of what the shim added
 * to the start-up of a process that never opens a socket. */
/* clang-format off */
/* The hooks of a socket's lifetime (also patched in by `leakshim attach`, below), then those of
 * its use after fork (forkshare.c). */
#define SOCKET_LIFETIME(X) \
    X(socket) X(connect) X(close) X(dup) X(dup2) X(dup3) X(fcntl) X(fcntl64) X(close_range) \
    X(closefrom) X(fclose) X(fork)
#define SOCKET_REALS(X) SOCKET_LIFETIME(X) X(send) X(sendto) X(sendmsg) X(write) X(writev)
/* clang-format on */
__attribute__((constructor)) static void resolve_socket_hooks(void)
{
#define NAME(fn) #fn,
#define REAL_AT(fn) (void **)&real_##fn,
    static const char *const names[] = {SOCKET_REALS(NAME)};
    void **const reals[] = {SOCKET_REALS(REAL_AT)};
    ls_real_symbols(names, reals, sizeof reals / sizeof reals[0]);
#undef NAME
#undef REAL_AT
}

LEAKSHIM_EXPORT pid_t fork(void)
{
    REQUIRE(fork, -1);
    if (!ls_in_shim)
        LS_RECORD(ls_forkshare_prepare()); /* the table the children report their use in */
    pid_t pid = REAL(fork)();
    if (pid == 0) {
        int e = errno;
        ls_after_fork_child(); /* the child gets its own reporter thread and dump trigger */
        errno = e;
    }
    return pid;
}

/* `leakshim attach` (hook_attach.c) patches the import slots of a running process to these hooks.
 * By their own addresses, through hidden aliases: in a shim loaded late with dlopen (RTLD_LOCAL),
 * the exported names resolve to libc's functions. */
#define LS_SELF(fn) extern __typeof__(fn) ls_self_##fn __attribute__((alias(#fn), copy(fn), visibility("hidden")));
#define HOOK_ROW(fn) {#fn, (void *)ls_self_##fn},
SOCKET_LIFETIME(LS_SELF)
const ls_got_hook ls_socket_hooks[] = {SOCKET_LIFETIME(HOOK_ROW)};
#undef HOOK_ROW
const size_t ls_socket_nhooks = sizeof ls_socket_hooks / sizeof ls_socket_hooks[0];
/* ------------------------------------------------------------------ first use after fork
 * Only a process that inherited tracked sockets looks (ls_fs_watch); there a tracked fd costs a
 * lock-free table load, an untracked one nothing more. Everywhere else: one load per call. */
#define FS_USE(fd)                                                                                                     \
    do {                                                                                                               \
        if (LS_UNLIKELY(__atomic_load_n(&ls_fs_watch, __ATOMIC_RELAXED)) && !ls_in_shim)                               \
            LS_RECORD(ls_forkshare_use(fd));                                                                           \
    } while (0)

LEAKSHIM_EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    REQUIRE(send, -1);
    FS_USE(fd);
    return REAL(send)(fd, buf, len, flags);
}

LEAKSHIM_EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to,
                               socklen_t tolen)
{
    REQUIRE(sendto, -1);
    FS_USE(fd);
    return REAL(sendto)(fd, buf, len, flags, to, tolen);
}

LEAKSHIM_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    REQUIRE(sendmsg, -1);
    FS_USE(fd);
    return REAL(sendmsg)(fd, msg, flags);
}

LEAKSHIM_EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
    REQUIRE(write, -1);
    FS_USE(fd);
    return REAL(write)(fd, buf, len);
}

LEAKSHIM_EXPORT ssize_t writev(int fd, const struct iovec *iov, int n)
{
    REQUIRE(writev, -1);
    FS_USE(fd);
    return REAL(writev)(fd, iov, n);
}
