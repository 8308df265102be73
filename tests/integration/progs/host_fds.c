/* Host-equivalence program for fd ownership and leak accounting (test_host.py). Each mode prints
 * what it observes -- fd listings, return values, and which of its fds are still-open database
 * sockets according to the kernel -- so the test can compare a bare run with a shimmed one line by
 * line, and the shim's exit report with the kernel's view.
 * Usage: host_fds MODE HOST PORT [LOGFILE]
 *   reuse                    connect, close, open /dev/null (listing after every step)
 *   daemon-closefrom|daemon-close_range|daemon-loop LOGFILE
 *                            connect, close every fd from 3 up, open a log file and a socketpair,
 *                            write HELLO into the pair, connect again, read the pair, write the log
 *   vfork-HOW-EXIT           connect, vfork; the child closes the socket (HOW: close, close_range,
 *                            closefrom, cloexec) then _exit(0)s (EXIT=exit) or execs /bin/true
 *   badflag                  connect, close_range(fd, fd, 0x80000000): must fail with EINVAL
 *   hold                     connect, print "ready", wait for EOF on stdin, exit (leaking it) */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "host_common.h"

/* One line: every open fd and what it is, with kernel object numbers and directories left out
 * (socket:[123] -> socket, /tmp/x/app.log -> app.log) so a bare and a shimmed run compare equal. */
static void list_fds(const char *tag)
{
    int fds[4096];
    int n = open_fds(fds, 4096);
    char line[65536];
    size_t len = (size_t)snprintf(line, sizeof line, "fds %s:", tag);
    for (int i = 0; i < n && len < sizeof line - 300; i++) {
        char link[64], target[256];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fds[i]);
        ssize_t t = readlink(link, target, sizeof target - 1);
        target[t > 0 ? t : 0] = 0;
        const char *what = target;
        char *colon = strstr(target, ":[");
        if (colon && strncmp(target, "anon_inode", 10) != 0)
            *colon = 0; /* socket:[ino], pipe:[ino] */
        else if (target[0] == '/' && strncmp(target, "/dev/", 5) != 0)
            what = strrchr(target, '/') + 1;
        len += (size_t)snprintf(line + len, sizeof line - len, " %d=%s", fds[i], what);
    }
    say("%s", line);
}

/* Bytes as text, non-printable ones as \xNN: a corrupted read shows what it got. */
static void escape(const char *in, ssize_t n, char *out, size_t outsz)
{
    size_t o = 0;
    for (ssize_t i = 0; i < n && o + 5 < outsz; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, outsz - o, "\\x%02x", c);
    }
    out[o] = 0;
}

static void mode_reuse(void)
{
    list_fds("start");
    int fd = open_db();
    say("db fd %d", fd);
    list_fds("connected");
    say("close %d", close(fd));
    list_fds("closed");
    int nul = open("/dev/null", O_RDONLY);
    say("devnull fd %d", nul);
    list_fds("devnull");
    print_db_fds();
}

static void close_all_from_3(const char *how)
{
    if (!strcmp(how, "closefrom")) {
        closefrom(3);
    } else if (!strcmp(how, "close_range")) {
        int r = close_range(3, ~0U, 0);
        say("close_range %d %s", r, r ? errname(errno) : "");
    } else {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
            perror("getrlimit");
            exit(5);
        }
        /* Bounded: no fd can be at or above the soft limit, and the kernel caps it (nr_open). */
        rlim_t lim = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 20) ? (1u << 20) : rl.rlim_cur;
        for (rlim_t fd = 3; fd < lim; fd++)
            close((int)fd);
    }
}

/* Calls fn from a frame that has no unwind information, as JIT-compiled code does (x86-64:
 * push %rbp; mov %rsp,%rbp; call *%rdi; pop %rbp; ret). An unwinder has to fall back to the frame
 * pointer there, and libunwind then validates the addresses it reads. Elsewhere: a plain call. */
static int call_from_jit_frame(int (*fn)(void))
{
#if defined(__x86_64__)
    static const unsigned char code[] = {0x55, 0x48, 0x89, 0xe5, 0xff, 0xd7, 0x5d, 0xc3};
    void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        die("mmap");
    memcpy(page, code, sizeof code);
    if (mprotect(page, 4096, PROT_READ | PROT_EXEC) != 0)
        die("mprotect");
    int (*tramp)(int (*)(void));
    void *p = page;
    memcpy(&tramp, &p, sizeof tramp);
    int r = tramp(fn);
    munmap(page, 4096);
    return r;
#else
    return fn();
#endif
}

static void mode_daemon(const char *how, const char *logpath)
{
    char method[32];
    snprintf(method, sizeof method, "%s", how);
    char *jit = strstr(method, "-jit");
    if (jit)
        *jit = 0;
    int db1 = open_db();
    say("db1 fd %d", db1);
    close_all_from_3(method);
    list_fds("closed");
    int log = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    say("log fd %d", log);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
        perror("socketpair");
        exit(5);
    }
    say("pair fds %d %d", sv[0], sv[1]);
    ssize_t w = write(sv[0], "HELLO", 5);
    say("pair write %zd", w);
    int db2 = jit ? call_from_jit_frame(open_db) : open_db();
    say("db2 fd %d", db2);
    /* Bare, the 5 bytes are already there; the timeout only bounds a broken run. */
    char buf[256], esc[1200];
    struct pollfd p = {.fd = sv[1], .events = POLLIN};
    int pr = poll(&p, 1, 5000);
    ssize_t r = -1;
    int e = 0;
    if (pr > 0) {
        r = read(sv[1], buf, sizeof buf);
        e = errno;
    }
    if (r >= 0) {
        escape(buf, r, esc, sizeof esc);
        say("pair read %zd '%s'", r, esc);
    } else {
        say("pair read failed (poll %d, %s)", pr, pr > 0 ? errname(e) : "no data");
        esc[0] = 0;
    }
    char logline[1300];
    int ll = snprintf(logline, sizeof logline, "daemon read '%s'\n", esc);
    ssize_t lw = write(log, logline, (size_t)ll);
    e = errno;
    say("log write %zd of %d %s", lw, ll, lw < 0 ? errname(e) : "");
    list_fds("end");
    print_db_fds();
}

static void mode_vfork(const char *how, const char *ending)
{
    int db = open_db();
    say("db fd %d", db);
    int kind = !strcmp(how, "close") ? 0 : !strcmp(how, "close_range") ? 1 : !strcmp(how, "closefrom") ? 2 : 3;
    int exec = !strcmp(ending, "exec");
    pid_t pid = vfork();
    if (pid == 0) {
        /* vfork child: shares the parent's memory; only syscalls and exec/_exit. */
        switch (kind) {
        case 0: close(db); break;
        case 1: close_range(3, ~0U, 0); break;
        case 2: closefrom(3); break;
        default: close_range(3, ~0U, CLOSE_RANGE_CLOEXEC); break;
        }
        if (exec)
            execl("/bin/true", "true", (char *)NULL);
        _exit(exec ? 127 : 0);
    }
    if (pid < 0) {
        perror("vfork");
        exit(5);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid) {
        perror("waitpid");
        exit(5);
    }
    say("child exited %d status %d", WIFEXITED(st), WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    print_db_fds();
}

static void mode_badflag(void)
{
    int db = open_db();
    say("db fd %d", db);
    errno = 0;
    int r = close_range((unsigned)db, (unsigned)db, (int)0x80000000u);
    int e = errno;
    say("close_range %d %s", r, r ? errname(e) : "");
    print_db_fds();
}

static void mode_hold(void)
{
    int db = open_db();
    say("ready %d", db);
    char buf[256];
    for (int i = 0; i < 100000; i++) { /* until EOF; bounded all the same */
        ssize_t n = read(0, buf, sizeof buf);
        if (n == 0 || (n < 0 && errno != EINTR))
            break;
    }
    print_db_fds();
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: host_fds MODE HOST PORT [LOGFILE]\n");
        return 2;
    }
    const char *mode = argv[1];
    host = argv[2];
    port = atoi(argv[3]);
    if (!strcmp(mode, "reuse"))
        mode_reuse();
    else if (!strncmp(mode, "daemon-", 7) && argc > 4)
        mode_daemon(mode + 7, argv[4]);
    else if (!strncmp(mode, "vfork-", 6)) {
        char how[32];
        snprintf(how, sizeof how, "%s", mode + 6);
        char *dash = strrchr(how, '-');
        if (!dash)
            return 2;
        *dash = 0;
        mode_vfork(how, dash + 1);
    } else if (!strcmp(mode, "badflag"))
        mode_badflag();
    else if (!strcmp(mode, "hold"))
        mode_hold();
    else {
        fprintf(stderr, "unknown mode '%s'\n", mode);
        return 2;
    }
    return 0;
}
