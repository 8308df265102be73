/* leakshim: run a program under the shim, take a snapshot of a running one, print the options.
 *
 *   leakshim run [--options OPTS] -- CMD ARGS...
 *   leakshim dump [--json] [--timeout SECONDS] PID
 *   leakshim options [--markdown]
 *   leakshim check-options OPTS
 */
#include "../shim/leakshim.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
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

static void quiet_err(const char *msg, void *arg)
{
    (void)msg;
    (*(int *)arg)++;
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
    char merged[8192];
    snprintf(merged, sizeof merged, "%s%s%s", env_opts ? env_opts : "", env_opts && *env_opts && opts ? ":" : "",
             opts ? opts : "");
    if (validate(merged)) {
        fprintf(stderr, "leakshim run: invalid options; nothing was started\n");
        return 2;
    }
    char shim[PATH_MAX];
    if (find_shim(shim, sizeof shim) != 0) {
        fprintf(stderr,
                "leakshim run: cannot find libleakshim.so (looked beside this tool and in %s; set LEAKSHIM_LIB)\n",
                LEAKSHIM_LIBDIR);
        return 2;
    }
    const char *pre = getenv("LD_PRELOAD");
    char preload[PATH_MAX * 2];
    snprintf(preload, sizeof preload, "%s%s%s", shim, pre && *pre ? ":" : "", pre ? pre : "");
    setenv("LD_PRELOAD", preload, 1);
    setenv("LEAKSHIM_OPTIONS", merged, 1);
    execvp(argv[i], argv + i);
    fprintf(stderr, "leakshim run: cannot run '%s': %s\n", argv[i], strerror(errno));
    return 127;
}

/* Reads one KEY=VALUE from /proc/PID/environ (the environment the process started with). */
static int proc_env(int pid, const char *key, char *out, size_t cap)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/environ", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    size_t klen = strlen(key);
    int found = -1;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t n;
    while ((n = getdelim(&line, &lcap, '\0', f)) > 0) {
        if (!strncmp(line, key, klen) && line[klen] == '=') {
            snprintf(out, cap, "%s", line + klen + 1);
            found = 0;
            break;
        }
    }
    free(line);
    fclose(f);
    return found;
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

/* The shim's reporter thread is named "leakshim": a signal sent to it alone interrupts nothing
 * of the host's. */
static int reporter_tid(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    struct dirent *e;
    int tid = 0;
    while (!tid && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char cpath[320], comm[32] = "";
        snprintf(cpath, sizeof cpath, "/proc/%d/task/%s/comm", pid, e->d_name);
        FILE *f = fopen(cpath, "re");
        if (f) {
            if (fgets(comm, sizeof comm, f) && !strncmp(comm, "leakshim\n", 9))
                tid = atoi(e->d_name);
            fclose(f);
        }
    }
    closedir(d);
    return tid;
}

static int cmd_dump(int argc, char **argv)
{
    int json = 0;
    double timeout = 10;
    const char *pidarg = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
            timeout = atof(argv[++i]);
        else if (argv[i][0] != '-' && !pidarg)
            pidarg = argv[i];
        else {
            usage(stderr);
            return 2;
        }
    }
    char *end;
    long pid = pidarg ? strtol(pidarg, &end, 10) : 0;
    if (!pidarg || *end || pid <= 0) {
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
        fprintf(stderr,
                "leakshim dump: process %ld is not running under leakshim (libleakshim.so is not loaded); "
                "no signal sent\n",
                pid);
        return 1;
    }
    /* Where and how that process dumps: its own LEAKSHIM_OPTIONS and TMPDIR. */
    ls_options o;
    char envopts[8192] = "", tmpdir[PATH_MAX] = "";
    int dummy = 0;
    ls_options_defaults(&o);
    if (proc_env((int)pid, "LEAKSHIM_OPTIONS", envopts, sizeof envopts) == 0)
        ls_options_parse(&o, envopts, quiet_err, &dummy); /* the target warned about its own */
    if (o.signal <= 0) {
        fprintf(stderr, "leakshim dump: process %ld runs with signal=none; it cannot be asked for a snapshot\n", pid);
        return 1;
    }
    const char *dir = o.dump_dir;
    if (!dir[0]) {
        if (proc_env((int)pid, "TMPDIR", tmpdir, sizeof tmpdir) != 0 || !tmpdir[0])
            snprintf(tmpdir, sizeof tmpdir, "/tmp");
        dir = tmpdir;
    }
    char name[64], path[PATH_MAX + 64];
    snprintf(name, sizeof name, "leakshim.%ld.dump.%s", pid, json ? "json" : "txt");
    snprintf(path, sizeof path, "%s/leakshim.%ld.dump.txt", dir, pid);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "%s/%s", dir, name);
    unlink(path);
    unlink(want);
    int in = inotify_init1(IN_CLOEXEC);
    if (in < 0 || inotify_add_watch(in, dir, IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
        fprintf(stderr, "leakshim dump: cannot watch '%s': %s\n", dir, strerror(errno));
        return 1;
    }
    int tid = reporter_tid((int)pid);
    int rc = tid ? (int)syscall(SYS_tgkill, (int)pid, tid, o.signal) : kill((pid_t)pid, o.signal);
    if (rc != 0) {
        fprintf(stderr, "leakshim dump: cannot signal process %ld: %s\n", pid, strerror(errno));
        return 1;
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (access(path, R_OK) == 0) /* text is renamed into place last */
            break;
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        double left = timeout - ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9);
        if (left <= 0) {
            fprintf(stderr, "leakshim dump: no snapshot from process %ld in %gs (expected %s)\n", pid, timeout, path);
            return 1;
        }
        struct pollfd p = {.fd = in, .events = POLLIN};
        if (poll(&p, 1, (int)(left * 1000) + 1) > 0) {
            char buf[4096];
            if (read(in, buf, sizeof buf) < 0 && errno != EAGAIN)
                break;
        }
    }
    close(in);
    FILE *f = fopen(want, "re");
    if (!f) {
        fprintf(stderr, "leakshim dump: cannot read %s: %s\n", want, strerror(errno));
        return 1;
    }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, n, stdout);
    fclose(f);
    return 0;
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
