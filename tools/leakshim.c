/* leakshim: run a program under the shim, take a snapshot of a running one, print the options.
 *
 *   leakshim run [--options OPTS] -- CMD ARGS...
 *   leakshim dump [--json] [--timeout SECONDS] PID
 *   leakshim options [--markdown]
 *   leakshim check-options OPTS
 */
#include "../shim/leakshim.h"

#include <ctype.h>
#include <dirent.h>
#include <stddef.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef LEAKSHIM_LIBDIR
#define LEAKSHIM_LIBDIR "/usr/local/lib"
#endif

static void usage(FILE *f)
{
    fputs("usage: leakshim run [--options OPTS] -- CMD [ARGS...]\n"
          "       leakshim dump [--json] [--timeout SECONDS] PID\n"
          "       leakshim options [--markdown]\n"
          "       leakshim check-options OPTS\n",
          f);
}

static void print_err(const char *msg, void *arg)
{
    (*(int *)arg)++;
    fprintf(stderr, "leakshim: %s\n", msg);
}

static int validate(const char *opts)
{
    ls_options o;
    int problems = 0;
    ls_options_defaults(&o);
    ls_options_parse(&o, opts, print_err, &problems);
    return problems;
}

/* The shim next to this tool (build tree: tools/../shim; installed: bin/../lib), else LIBDIR. */
static int find_shim(char *out, size_t cap)
{
    const char *env = getenv("LEAKSHIM_LIB");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return access(out, R_OK);
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = 0;
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = 0;
            const char *rel[] = {"/../shim/libleakshim.so", "/../lib/libleakshim.so", "/../../shim/libleakshim.so"};
            for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
                char cand[PATH_MAX + 64];
                snprintf(cand, sizeof cand, "%s%s", self, rel[i]);
                if (access(cand, R_OK) == 0 && realpath(cand, out))
                    return 0;
            }
        }
    }
    snprintf(out, cap, "%s/libleakshim.so", LEAKSHIM_LIBDIR);
    return access(out, R_OK);
}

static int cmd_run(int argc, char **argv)
{
    const char *opts = NULL;
    int i = 0;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            i++;
            break;
        } else if (!strcmp(argv[i], "--options") && i + 1 < argc)
            opts = argv[++i];
        else if (!strncmp(argv[i], "--options=", 10))
            opts = argv[i] + 10;
        else if (argv[i][0] == '-') {
            fprintf(stderr, "leakshim run: unknown flag '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else
            break;
    }
    if (i >= argc) {
        fprintf(stderr, "leakshim run: no command given\n");
        usage(stderr);
        return 2;
    }
    /* Options already in the environment come first; --options override them (later wins). */
    const char *env_opts = getenv("LEAKSHIM_OPTIONS");
    size_t mlen = (env_opts ? strlen(env_opts) : 0) + (opts ? strlen(opts) : 0) + 2;
    char *merged = malloc(mlen); /* no fixed limit: options are never silently cut */
    if (!merged) {
        fprintf(stderr, "leakshim run: out of memory\n");
        return 2;
    }
    snprintf(merged, mlen, "%s%s%s", env_opts ? env_opts : "", env_opts && *env_opts && opts ? ":" : "",
             opts ? opts : "");
    if (validate(merged)) {
        fprintf(stderr, "leakshim run: invalid options; nothing was started\n");
        free(merged);
        return 2;
    }
    char shim[PATH_MAX];
    if (find_shim(shim, sizeof shim) != 0) {
        fprintf(stderr,
                "leakshim run: cannot find libleakshim.so (looked beside this tool and in %s; set LEAKSHIM_LIB)\n",
                LEAKSHIM_LIBDIR);
        free(merged);
        return 2;
    }
    const char *pre = getenv("LD_PRELOAD");
    size_t plen = strlen(shim) + (pre ? strlen(pre) : 0) + 2;
    char *preload = malloc(plen);
    if (!preload) {
        fprintf(stderr, "leakshim run: out of memory\n");
        free(merged);
        return 2;
    }
    snprintf(preload, plen, "%s%s%s", shim, pre && *pre ? ":" : "", pre ? pre : "");
    setenv("LD_PRELOAD", preload, 1); /* setenv copies: ours are freed either way */
    setenv("LEAKSHIM_OPTIONS", merged, 1);
    free(preload);
    free(merged);
    execvp(argv[i], argv + i);
    fprintf(stderr, "leakshim run: cannot run '%s': %s\n", argv[i], strerror(errno));
    return 127;
}

static int has_shim(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, "libleakshim") != NULL;
    fclose(f);
    return found;
}

/* Does the process have the shim's reporter thread (named "leakshim")? */
static int has_reporter(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char cpath[320], comm[32] = "";
        snprintf(cpath, sizeof cpath, "/proc/%d/task/%s/comm", pid, e->d_name);
        FILE *f = fopen(cpath, "re");
        if (f) {
            found = fgets(comm, sizeof comm, f) && !strcmp(comm, "leakshim\n");
            fclose(f);
        }
    }
    closedir(d);
    return found;
}

/* Connects to the target's private channel, "@leakshim.PID" (or ".1".."8" when the name was
 * squatted), accepting only a socket whose owner is PID itself (SO_PEERCRED): a socket planted
 * under that name by another process is never read. Returns the fd, or -1. */
static int channel_connect(int pid)
{
    for (int k = 0; k <= 8; k++) {
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0)
            return -1;
        struct sockaddr_un a;
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        int n = k ? snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "leakshim.%d.%d", pid, k)
                  : snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "leakshim.%d", pid);
        socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
        struct ucred cr;
        socklen_t crlen = sizeof cr;
        if (connect(s, (struct sockaddr *)&a, len) == 0 && getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) == 0 &&
            cr.pid == pid)
            return s;
        close(s);
    }
    return -1;
}

/* A timeout: a finite number of seconds, > 0. */
static int parse_timeout(const char *v, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !(x > 0) || x > 86400 || !isdigit((unsigned char)v[0]))
        return -1;
    *out = x;
    return 0;
}

static int cmd_dump(int argc, char **argv)
{
    int json = 0;
    double timeout = 10;
    const char *pidarg = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--timeout") || !strncmp(argv[i], "--timeout=", 10)) {
            const char *v = argv[i][9] == '=' ? argv[i] + 10 : (i + 1 < argc ? argv[++i] : "");
            if (parse_timeout(v, &timeout) != 0) {
                fprintf(stderr, "leakshim dump: --timeout takes a number of seconds (0 < N <= 86400), not '%s'\n", v);
                return 2;
            }
        } else if (argv[i][0] != '-' && !pidarg)
            pidarg = argv[i];
        else {
            fprintf(stderr, "leakshim dump: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    char *end;
    errno = 0;
    long pid = pidarg ? strtol(pidarg, &end, 10) : 0;
    if (!pidarg || !isdigit((unsigned char)pidarg[0]) || *end || errno || pid <= 0 || pid > INT_MAX) {
        fprintf(stderr, "leakshim dump: expected a PID\n");
        usage(stderr);
        return 2;
    }
    int shimmed = has_shim((int)pid);
    if (shimmed < 0) {
        fprintf(stderr, "leakshim dump: no process %ld (or not allowed to read it)\n", pid);
        return 1;
    }
    if (!shimmed) {
        fprintf(stderr, "leakshim dump: process %ld is not running under leakshim (libleakshim.so is not loaded)\n",
                pid);
        return 1;
    }
    /* The channel opens with the reporter thread (named "leakshim"), which starts when the first
     * connection is tracked: while that thread exists, its channel is coming. */
    int s = channel_connect((int)pid);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (s < 0 && has_reporter((int)pid)) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 > timeout)
            break;
        struct timespec step = {0, 5 * 1000 * 1000};
        nanosleep(&step, NULL); /* polling the target's state, bounded by --timeout */
        s = channel_connect((int)pid);
    }
    if (s < 0) {
        if (has_reporter((int)pid))
            fprintf(stderr,
                    "leakshim dump: process %ld offers no dump channel (its kernel refuses pidfd_getfd?); "
                    "`kill -USR2 %ld` writes a snapshot to its report destination\n",
                    pid, pid);
        else
            fprintf(stderr, "leakshim dump: process %ld runs leakshim but has tracked no database connection yet\n",
                    pid);
        return has_reporter((int)pid) ? 1 : 0;
    }
    struct timeval tv = {.tv_sec = (time_t)timeout,
                         .tv_usec = (suseconds_t)((timeout - (double)(time_t)timeout) * 1e6)};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    const char *req = json ? "dump json\n" : "dump text\n";
    if (send(s, req, strlen(req), MSG_NOSIGNAL) < 0) {
        fprintf(stderr, "leakshim dump: cannot ask process %ld for a snapshot: %s\n", pid, strerror(errno));
        close(s);
        return 1;
    }
    char buf[65536];
    size_t total = 0;
    for (;;) {
        ssize_t n = recv(s, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "leakshim dump: no complete snapshot from process %ld in %gs: %s\n", pid, timeout,
                    strerror(errno == EAGAIN ? ETIMEDOUT : errno));
            close(s);
            return 1;
        }
        if (n == 0)
            break;
        fwrite(buf, 1, (size_t)n, stdout);
        total += (size_t)n;
    }
    close(s);
    if (!total) {
        fprintf(stderr, "leakshim dump: process %ld closed the channel without a snapshot\n", pid);
        return 1;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "run"))
        return cmd_run(argc - 2, argv + 2);
    if (!strcmp(cmd, "dump"))
        return cmd_dump(argc - 2, argv + 2);
    if (!strcmp(cmd, "options")) {
        ls_buf b = {0};
        ls_options_help(&b, argc > 2 && !strcmp(argv[2], "--markdown"));
        if (b.data)
            fputs(b.data, stdout);
        ls_buf_free(&b);
        return 0;
    }
    if (!strcmp(cmd, "check-options")) {
        if (argc < 3) {
            usage(stderr);
            return 2;
        }
        return validate(argv[2]) ? 2 : 0;
    }
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "leakshim: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
