/*
 * Report destinations (outfile.c). A report holds peer addresses and stacks, and the shim often
 * runs inside root services, so the report path must never become a way to write into, or read
 * from, a file someone else prepared: a predictable name such as /tmp/x.%p.txt is easy to plant.
 * Used by report.c; unit-tested in tests/unit/test_outfile.c.
 */
#ifndef LS_OUTFILE_H
#define LS_OUTFILE_H

#include <stddef.h>

/* The process's own fd that path names (/dev/stdin, /dev/stdout, /dev/stderr, /dev/fd/N,
 * /proc/self/fd/N), or -1 when path names a file. */
int ls_out_fd_of(const char *path);

/* Opens path for appending a report. Returns an fd, or -1 with a one-line human reason in why
 * (it does not repeat the path). *owned is 1 when the fd was opened here (close it with
 * ls_sys_close) and 0 when path named one of the process's own fds (leave it open).
 * Rules:
 *  - a path naming an fd (ls_out_fd_of) is that fd, if it is open for writing; nothing is opened;
 *  - the directory holding the file, and each directory above it, must not be writable by others
 *    without the sticky bit (anyone could swap the file or the directory);
 *  - a missing file is created O_EXCL, mode 0600 whatever the umask;
 *  - an existing one is opened without O_CREAT and never through a symbolic link; it must be a
 *    regular file owned by geteuid(), with one link and not writable by group or others, or a
 *    character device (/dev/null, a tty), or a FIFO owned by geteuid() or root that has a reader
 *    (never waits for one);
 *  - writes append (O_APPEND): live warnings and then the exit report go to the same file. */
int ls_out_open(const char *path, int *owned, char *why, size_t whycap);

/* Would ls_out_open(path) succeed for this process? Makes the same checks, plus write permission
 * on the file or (when it does not exist) its directory, but creates, opens for writing and
 * changes nothing. Returns 0 or -1 with a reason in why, as ls_out_open. A path naming an fd is
 * not checked (it names an fd of the program that will run): 0. A FIFO is accepted here even
 * without a reader, which ls_out_open refuses at write time. */
int ls_out_check(const char *path, char *why, size_t whycap);

/* The directory dir opened O_PATH (for openat/renameat), after the directory checks of
 * ls_out_open; -1 with a reason in why. */
int ls_out_dir_open(const char *dir, char *why, size_t whycap);

#endif
