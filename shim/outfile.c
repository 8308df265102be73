/* Report files, opened so that a planted name cannot redirect them (issue "Files"): a symlink or a
 * hard link at the predictable name, a file someone else owns or can write, a directory anyone can
 * swap files in. Every check is made on what was actually opened (fstat of the fd, openat in the
 * directory fd that was checked), so nothing can change between the check and the write.
 * Runs in report context (reporter thread, atexit): never in a signal handler. */
#include "ls_internal.h"
#include "ls_outfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_DIR_DEPTH 64 /* directories checked above the file; deeper trees stop checking there */

static void reason(char *why, size_t cap, const char *fmt, ...) LS_PRINTF(3, 4);
static void reason(char *why, size_t cap, const char *fmt, ...)
{
    if (!why || !cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
}

/* fcntl as a raw system call: the shim interposes fcntl (F_DUPFD), and the core never goes
 * through its own hooks. */
static int sys_fcntl(int fd, int cmd, long arg)
{
    return (int)syscall(SYS_fcntl, fd, cmd, arg);
}

/* "123" -> 123; -1 unless s is a non-empty run of at most 9 digits. */
static int parse_fd(const char *s)
{
    int n = 0, i = 0;
    for (; s[i]; i++) {
        if (s[i] < '0' || s[i] > '9' || i >= 9)
            return -1;
        n = n * 10 + (s[i] - '0');
    }
    return i ? n : -1;
}

int ls_out_fd_of(const char *path)
{
    static const char *const std[] = {"/dev/stdin", "/dev/stdout", "/dev/stderr"};
    static const char *const dirs[] = {"/dev/fd/", "/proc/self/fd/"};
    if (!path)
        return -1;
    for (int i = 0; i < 3; i++)
        if (!strcmp(path, std[i]))
            return i;
    for (int i = 0; i < 2; i++) {
        size_t n = strlen(dirs[i]);
        if (!strncmp(path, dirs[i], n))
            return parse_fd(path + n);
    }
    return -1;
}

/* The process's own fd n, which the path named: used as is, never opened or closed here. */
static int own_fd(int n, char *why, size_t cap)
{
    struct stat st;
    int fl = -1, h = ls_host_fd(n); /* the reporter thread has its own fd table */
    int bad = h < 0 || fstat(h, &st) < 0 || (fl = sys_fcntl(h, F_GETFL, 0)) < 0;
    ls_host_fd_done(n, h);
    if (bad) {
        reason(why, cap, "fd %d is not open", n);
        return -1;
    }
    if ((fl & O_ACCMODE) == O_RDONLY) {
        reason(why, cap, "fd %d is not open for writing", n);
        return -1;
    }
    return n;
}

/* Refuses when dfd, or a directory above it, is writable by others and not sticky: anyone could
 * rename the file (or the directory) away and put their own in its place. Walks up with "..",
 * from the directory actually opened, so symbolic links in the path cannot hide an ancestor. */
static int dir_trusted(int dfd, const char *dir, char *why, size_t cap)
{
    int cur = dfd;
    int ok = 1;
    for (int depth = 0; depth < MAX_DIR_DEPTH; depth++) {
        struct stat st, up;
        if (fstat(cur, &st) < 0)
            break;
        if ((st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX)) {
            if (depth == 0)
                reason(why, cap, "directory '%s' is writable by others and not sticky (mode %04o)", dir,
                       (unsigned)(st.st_mode & 07777));
            else
                reason(why, cap, "a directory %d level%s above '%s' is writable by others and not sticky (mode %04o)",
                       depth, depth == 1 ? "" : "s", dir, (unsigned)(st.st_mode & 07777));
            ok = 0;
            break;
        }
        int next = openat(cur, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (next < 0) /* no search permission above: what can be checked was */
            break;
        if (cur != dfd)
            ls_sys_close(cur);
        cur = next;
        if (fstat(cur, &up) < 0 || (up.st_dev == st.st_dev && up.st_ino == st.st_ino))
            break; /* the root: its ".." is itself */
    }
    if (cur != dfd)
        ls_sys_close(cur);
    return ok;
}

/* Is what st describes something a report may be appended to? */
static int stat_ok(const struct stat *st, char *why, size_t cap)
{
    uid_t me = geteuid();
    if (S_ISREG(st->st_mode)) {
        if (st->st_uid != me)
            reason(why, cap, "the file exists and belongs to uid %u, not to this process (uid %u)",
                   (unsigned)st->st_uid, (unsigned)me);
        else if (st->st_nlink != 1)
            reason(why, cap, "the file exists and has %lu hard links", (unsigned long)st->st_nlink);
        else if (st->st_mode & (S_IWGRP | S_IWOTH))
            reason(why, cap, "the file exists and is writable by group or others (mode %04o)",
                   (unsigned)(st->st_mode & 07777));
        else
            return 1;
        return 0;
    }
    if (S_ISCHR(st->st_mode))
        return 1;
    if (S_ISFIFO(st->st_mode)) {
        if (st->st_uid == me || st->st_uid == 0)
            return 1;
        reason(why, cap, "it is a FIFO belonging to uid %u", (unsigned)st->st_uid);
        return 0;
    }
    if (S_ISDIR(st->st_mode))
        reason(why, cap, "it is a directory");
    else
        reason(why, cap, "it is not a regular file, character device or FIFO");
    return 0;
}

/* fd was opened without O_CREAT: is it something a report may be appended to? */
static int existing_ok(int fd, char *why, size_t cap)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        reason(why, cap, "fstat: %s", strerror(errno));
        return 0;
    }
    return stat_ok(&st, why, cap);
}

/* One attempt in the checked directory: >= 0 an fd, -1 refused (why set), -2 the name changed
 * between the two opens (try again). */
static int open_in(int dfd, const char *base, char *why, size_t cap)
{
    /* O_EXCL never follows a symlink (even a dangling one) and never opens what exists. */
    int fd = openat(dfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0) {
        (void)fchmod(fd, 0600); /* the umask may have taken bits away; it never adds any */
        return fd;
    }
    if (errno != EEXIST) {
        reason(why, cap, "%s", strerror(errno));
        return -1;
    }
    /* O_NONBLOCK: a FIFO without a reader fails (ENXIO) instead of hanging the host at exit;
     * O_NOCTTY: a terminal never becomes the process's controlling terminal. */
    fd = openat(dfd, base, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT)
            return -2;
        if (errno == ELOOP)
            reason(why, cap, "it is a symbolic link (report files are never opened through one)");
        else if (errno == ENXIO)
            reason(why, cap, "it is a FIFO with no reader, or a socket");
        else
            reason(why, cap, "%s", strerror(errno));
        return -1;
    }
    if (!existing_ok(fd, why, cap)) {
        ls_sys_close(fd);
        return -1;
    }
    int fl = sys_fcntl(fd, F_GETFL, 0);
    if (fl >= 0)
        sys_fcntl(fd, F_SETFL, fl & ~O_NONBLOCK); /* whole reports, not EAGAIN, on a slow FIFO */
    return fd;
}

/* path -> the directory holding the file (dir, PATH_MAX bytes) and the file's name in it (*base);
 * then the directory opened O_PATH. Returns that fd, or -1 (why set). */
static int open_dir_of(const char *path, char *dir, const char **base, char *why, size_t whycap)
{
    const char *slash = strrchr(path, '/');
    *base = slash ? slash + 1 : path;
    if (!slash)
        snprintf(dir, PATH_MAX, ".");
    else if (slash == path)
        snprintf(dir, PATH_MAX, "/");
    else if ((size_t)(slash - path) >= PATH_MAX) {
        reason(why, whycap, "path too long");
        return -1;
    } else
        snprintf(dir, PATH_MAX, "%.*s", (int)(slash - path), path);
    if (!**base || !strcmp(*base, ".") || !strcmp(*base, "..")) {
        reason(why, whycap, "it names a directory, not a file");
        return -1;
    }
    int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        reason(why, whycap, "directory '%s': %s", dir, strerror(errno));
    return dfd;
}

int ls_out_open(const char *path, int *owned, char *why, size_t whycap)
{
    *owned = 0;
    if (why && whycap)
        why[0] = 0;
    if (!path || !*path) {
        reason(why, whycap, "empty path");
        return -1;
    }
    int n = ls_out_fd_of(path);
    if (n >= 0)
        return own_fd(n, why, whycap);

    char dir[PATH_MAX];
    const char *base;
    int dfd = open_dir_of(path, dir, &base, why, whycap);
    if (dfd < 0)
        return -1;
    int fd = -1;
    if (dir_trusted(dfd, dir, why, whycap)) {
        fd = -2;
        for (int tries = 0; tries < 4 && fd == -2; tries++)
            fd = open_in(dfd, base, why, whycap);
        if (fd == -2) {
            reason(why, whycap, "the file keeps appearing and disappearing");
            fd = -1;
        }
    }
    ls_sys_close(dfd);
    if (fd >= 0)
        *owned = 1;
    return fd;
}

/* ls_out_check's look at the name in the checked directory: 1 if open_in would take it. */
static int check_in(int dfd, const char *dir, const char *base, char *why, size_t cap)
{
    struct stat st;
    if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno != ENOENT) {
            reason(why, cap, "%s", strerror(errno));
            return 0;
        }
        if (faccessat(dfd, ".", W_OK | X_OK, AT_EACCESS) < 0) { /* it would be created there */
            reason(why, cap, "cannot create files in directory '%s': %s", dir, strerror(errno));
            return 0;
        }
        return 1;
    }
    if (S_ISLNK(st.st_mode)) {
        reason(why, cap, "it is a symbolic link (report files are never opened through one)");
        return 0;
    }
    if (!stat_ok(&st, why, cap))
        return 0;
    if (faccessat(dfd, base, W_OK, AT_EACCESS) < 0) {
        reason(why, cap, "the file is not writable: %s", strerror(errno));
        return 0;
    }
    return 1;
}

/* The checks of ls_out_open, and the permissions it would need, made without creating or opening
 * the file: what `leakshim check-options` and `leakshim run` say before anything runs. */
int ls_out_check(const char *path, char *why, size_t whycap)
{
    if (why && whycap)
        why[0] = 0;
    if (!path || !*path) {
        reason(why, whycap, "empty path");
        return -1;
    }
    if (ls_out_fd_of(path) >= 0) /* an fd of the program that will run: not ours to check */
        return 0;
    char dir[PATH_MAX];
    const char *base;
    int dfd = open_dir_of(path, dir, &base, why, whycap);
    if (dfd < 0)
        return -1;
    int ok = dir_trusted(dfd, dir, why, whycap) && check_in(dfd, dir, base, why, whycap);
    ls_sys_close(dfd);
    return ok ? 0 : -1;
}

/* A directory that files may be created in by the rules above (metrics=DIR): opened O_PATH, and
 * refused when it or a directory above it is writable by others without the sticky bit. */
int ls_out_dir_open(const char *dir, char *why, size_t whycap)
{
    if (why && whycap)
        why[0] = 0;
    int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        reason(why, whycap, "%s", strerror(errno));
        return -1;
    }
    if (!dir_trusted(dfd, dir, why, whycap)) {
        ls_sys_close(dfd);
        return -1;
    }
    return dfd;
}
