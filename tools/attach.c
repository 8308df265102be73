/* `leakshim attach PID` / `leakshim detach PID`: load the shim into a process that is already
 * running, or pause it there (shim/hook_attach.c is the other half).
 *
 * The debugger is gdb in batch mode, not an injector of our own: gdb stops every thread, knows how
 * to call a function in the target and to restart the system call it interrupted, and leaves the
 * process as it found it when it detaches. What we add is the choice of *where* to call: dlopen
 * and our entry point allocate and take the loader's lock, so the calling thread must not be
 * inside malloc or the loader. memray's and heaptrack's answer is to call from a thread stopped in
 * a harmless libc function; so do we: a thread already blocked in one (accept, poll, epoll_wait,
 * recv, read, nanosleep, ...) is taken as is, otherwise breakpoints on those functions' entry
 * points are set until a thread reaches one (within --timeout), then removed before anything is
 * called. The library is opened RTLD_NOW | RTLD_LOCAL (so nothing in the process can find its
 * exported names: symbol interposition does not apply to it, the GOT patching in the shim does).
 *
 * Before gdb is run, everything that would make the attach fail or do harm is checked, and the
 * attach refused with one line: a statically linked program (no loader to dlopen with), no glibc,
 * Yama's ptrace_scope or missing rights (another user, no CAP_SYS_PTRACE), another PID or network
 * namespace (`leakshim dump` could not reach the shim's channel) or a mount namespace where the
 * library is not the same file, a process that runs the shim from its start (preloaded) or that
 * another tracer holds, a seccomp
 * filter on this tool (gdb inherits it) that forbids ptrace, gdb missing. */
#include "../shim/ls_internal.h"
#include "attach.h"

#include <ctype.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The gdb side, run with `gdb -batch -x`: parameters come in the environment (LEAKSHIM_ATTACH_*),
 * results go out as "LEAKSHIM-RESULT n" / "LEAKSHIM-ERROR text" lines on stdout. */
static const char gdb_script[] =
    "import gdb, os, re, signal, threading\n"
    "lib = os.environ['LEAKSHIM_ATTACH_LIB']\n"
    "opts = os.environ['LEAKSHIM_ATTACH_OPTS']\n"
    "mode = os.environ['LEAKSHIM_ATTACH_MODE']\n"
    "timeout = float(os.environ['LEAKSHIM_ATTACH_TIMEOUT'])\n"
    "# libc functions a thread can be stopped in without holding malloc's or the loader's locks\n"
    "SAFE = {'accept', 'accept4', 'poll', 'ppoll', 'select', 'pselect', 'pselect6', 'epoll_wait',\n"
    "        'epoll_pwait', 'epoll_pwait2', 'recv', 'recvfrom', 'recvmsg', 'read', 'readv', 'send',\n"
    "        'sendto', 'sendmsg', 'write', 'writev', 'nanosleep', 'clock_nanosleep', 'pause',\n"
    "        'sigsuspend', 'sigtimedwait', 'sigwaitinfo', 'wait4', 'waitpid', 'connect'}\n"
    "def say(*a):\n"
    "    print('LEAKSHIM-' + ' '.join(str(x) for x in a), flush=True)\n"
    "def norm(n):\n"
    "    n = (n or '').split('@')[0]\n"
    "    while True:\n"
    "        m = re.match(r'^(__GI_|__libc_|_)', n)\n"
    "        if not m:\n"
    "            return re.sub(r'(_nocancel|64)$', '', n)\n"
    "        n = n[m.end():]\n"
    "def inside_shim(f):\n"
    "    # a re-attach: a thread inside one of the shim's own calls may hold its locks\n"
    "    for _ in range(32):\n"
    "        try:\n"
    "            f = f.older()\n"
    "        except gdb.error:\n"
    "            return False\n"
    "        if f is None:\n"
    "            return False\n"
    "        if 'libleakshim' in (gdb.solib_name(f.pc()) or ''):\n"
    "            return True\n"
    "    return False\n"
    "def safe_here():\n"
    "    try:\n"
    "        f = gdb.newest_frame()\n"
    "        return ('libc.so' in (gdb.solib_name(f.pc()) or '') and norm(f.name()) in SAFE\n"
    "                and not inside_shim(f))\n"
    "    except gdb.error:\n"
    "        return False\n"
    "def find_safe():\n"
    "    for t in gdb.selected_inferior().threads():\n"
    "        if t.name == 'leakshim':  # the shim's reporter: an fd table of its own\n"
    "            continue\n"
    "        t.switch()\n"
    "        if safe_here():\n"
    "            return True\n"
    "    return False\n"
    "def acceptable():\n"
    "    return safe_here() and gdb.selected_thread().name != 'leakshim'\n"
    "def wait_safe():\n"
    "    bps = []\n"
    "    for n in sorted(SAFE):\n"
    "        try:\n"
    "            bps.append(gdb.Breakpoint(n, internal=True))\n"
    "        except Exception:\n"
    "            pass\n"
    "    late = []\n"
    "    def give_up():\n"
    "        late.append(1)\n"
    "        os.kill(os.getpid(), signal.SIGINT)  # interrupts the continue below\n"
    "    timer = threading.Timer(timeout, give_up)\n"
    "    timer.start()\n"
    "    ok = False\n"
    "    try:\n"
    "        # a stop in a thread we do not call from (the shim's reporter, a thread inside the\n"
    "        # shim) is let go on\n"
    "        while not late and not ok:\n"
    "            try:\n"
    "                gdb.execute('continue', to_string=True)\n"
    "            except BaseException:\n"
    "                break\n"
    "            ok = acceptable()\n"
    "    finally:\n"
    "        timer.cancel()\n"
    "        for b in bps:\n"
    "            b.delete()\n"
    "    return ok and acceptable()\n"
    "def cstr(s):\n"
    "    return '\"' + s.replace('\\\\', '\\\\\\\\').replace('\"', '\\\\\"') + '\"'\n"
    "def call(expr):\n"
    "    return int(gdb.parse_and_eval(expr))\n"
    "def main():\n"
    "    for c in ('set confirm off', 'set pagination off', 'set unwindonsignal on',\n"
    "              'set print thread-events off', 'sharedlibrary libc\\\\.so'):\n"
    "        gdb.execute(c, to_string=True)\n"
    "    if not find_safe() and not wait_safe():\n"
    "        say('ERROR', 'no thread reached a safe point (a blocking libc call) within %gs; try again when '\n"
    "            'the process is serving, or with a longer --timeout' % timeout)\n"
    "        return\n"
    "    flags = 2 if mode == 'attach' else 6  # RTLD_NOW, | RTLD_NOLOAD to detach\n"
    "    h = call('((void *(*)(const char *, int))dlopen)(%s, %d)' % (cstr(lib), flags))\n"
    "    if not h:\n"
    "        if mode != 'attach':\n"
    "            say('RESULT', -1)\n"
    "            return\n"
    "        e = gdb.parse_and_eval('((char *(*)(void))dlerror)()')\n"
    "        say('ERROR', 'dlopen failed in the process: ' + (e.string() if int(e) else '?'))\n"
    "        return\n"
    "    name = 'leakshim_attach' if mode == 'attach' else 'leakshim_detach'\n"
    "    fn = call('((void *(*)(void *, const char *))dlsym)((void *)%d, \"%s\")' % (h, name))\n"
    "    if not fn:\n"
    "        say('ERROR', 'the library loaded has no %s: another libleakshim.so version?' % name)\n"
    "        return\n"
    "    if mode == 'attach':\n"
    "        r = call('((int (*)(const char *))%d)(%s)' % (fn, cstr(opts)))\n"
    "    else:\n"
    "        r = call('((int (*)(void))%d)()' % fn)\n"
    "        call('((int (*)(void *))dlclose)((void *)%d)' % h)  # the NOLOAD reference only\n"
    "    say('RESULT', r)\n"
    "try:\n"
    "    main()\n"
    "except BaseException as e:\n"
    "    say('ERROR', 'gdb: %s' % str(e).strip().replace('\\n', ' '))\n"
    "try:\n"
    "    gdb.execute('detach', to_string=True)\n"
    "except BaseException:\n"
    "    pass\n";

/* ------------------------------------------------------------------ reading /proc */

/* The file as a NUL-terminated string (at most cap - 1 bytes); its length, or -1. */
static int read_text(const char *path, char *buf, size_t cap)
{
    ssize_t n = ls_read_file(path, buf, cap - 1);
    buf[n > 0 ? n : 0] = 0;
    return (int)n;
}

/* A "Key:\tvalue" line of /proc/PID/status as text (value copied), or "" if absent. */
static void status_field(const char *status, const char *key, char *out, size_t cap)
{
    out[0] = 0;
    size_t k = strlen(key);
    for (const char *p = status; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncmp(p, key, k) && p[k] == ':') {
            p += k + 1;
            while (*p == ' ' || *p == '\t')
                p++;
            size_t n = strcspn(p, "\n");
            snprintf(out, cap, "%.*s", (int)n, p);
            return;
        }
}

static int have_cap_sys_ptrace(void)
{
    char st[8192], eff[64];
    if (read_text("/proc/self/status", st, sizeof st) < 0)
        return 0;
    status_field(st, "CapEff", eff, sizeof eff);
    unsigned long long caps = strtoull(eff, NULL, 16);
    return (caps >> 19) & 1; /* CAP_SYS_PTRACE */
}

static int same_ns(int pid, const char *ns)
{
    char a[64], b[64], la[128] = "", lb[128] = "";
    snprintf(a, sizeof a, "/proc/%d/ns/%s", pid, ns);
    snprintf(b, sizeof b, "/proc/self/ns/%s", ns);
    ssize_t na = readlink(a, la, sizeof la - 1), nb = readlink(b, lb, sizeof lb - 1);
    if (na <= 0 || nb <= 0)
        return 1; /* cannot tell (no such namespace type): not a reason to refuse */
    la[na] = lb[nb] = 0;
    return !strcmp(la, lb);
}

/* The process's maps: does it map the shim, glibc, a dynamic loader? */
typedef struct maps_facts {
    int shim, libc, loader;
} maps_facts;

static int read_maps(int pid, maps_facts *m)
{
    char path[64], line[4096];
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    memset(m, 0, sizeof *m);
    while (fgets(line, sizeof line, f)) {
        const char *name = strrchr(line, '/');
        if (!name)
            continue;
        m->shim |= strstr(name, "libleakshim") != NULL;
        m->libc |= !strncmp(name, "/libc.so.6", 10) || !strncmp(name, "/libc-2.", 8);
        m->loader |= !strncmp(name, "/ld-linux", 9) || !strncmp(name, "/ld64.so", 8) || !strncmp(name, "/ld-", 4);
    }
    fclose(f);
    return 0;
}

/* AT_BASE from /proc/PID/auxv: 0 for a program with no interpreter (static, static-pie). */
static long auxv_base(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/auxv", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    unsigned long v[2];
    long base = 0;
    while (read(fd, v, sizeof v) == (ssize_t)sizeof v && v[0] != AT_NULL)
        if (v[0] == AT_BASE)
            base = (long)v[1];
    close(fd);
    return base;
}

/* Does the process run the shim from its start (LD_PRELOAD names it in its environment)? */
static int preloaded(int pid)
{
    char path[64];
    static char env[1 << 16];
    snprintf(path, sizeof path, "/proc/%d/environ", pid);
    int n = read_text(path, env, sizeof env);
    for (int i = 0; i < n; i += (int)strlen(env + i) + 1)
        if (!strncmp(env + i, "LD_PRELOAD=", 11) && strstr(env + i, "libleakshim"))
            return 1;
    return 0;
}

/* ------------------------------------------------------------------ refusals */

static const char *prog_name(int pid, char *buf, size_t cap)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/comm", pid);
    if (read_text(path, buf, cap) <= 0)
        snprintf(buf, cap, "?");
    buf[strcspn(buf, "\n")] = 0;
    return buf;
}

/* The Yama LSM's ptrace_scope (-1 without Yama). LEAKSHIM_TEST_PTRACE_SCOPE names another file to
 * read it from (the tests, where the real one cannot be changed). */
static int ptrace_scope(void)
{
    const char *path = getenv("LEAKSHIM_TEST_PTRACE_SCOPE");
    char buf[32];
    if (read_text(path && *path ? path : "/proc/sys/kernel/yama/ptrace_scope", buf, sizeof buf) <= 0)
        return -1;
    return atoi(buf);
}

/* Does a seccomp filter on this tool (inherited by gdb) forbid ptrace? Probed in a child, which
 * asks about itself (ESRCH: not traced, so the call itself is allowed); a filter answers with
 * another errno or kills the child. Only when /proc/self/status says a filter is installed. */
static int seccomp_forbids_ptrace(void)
{
    char st[8192], mode[16];
    if (read_text("/proc/self/status", st, sizeof st) <= 0)
        return 0;
    status_field(st, "Seccomp", mode, sizeof mode);
    if (strcmp(mode, "2"))
        return 0;
    pid_t child = fork();
    if (child == 0) {
        errno = 0;
        long r = syscall(SYS_ptrace, PTRACE_PEEKUSER, (long)getpid(), 0L, 0L);
        _exit(r == -1 && errno == ESRCH ? 0 : 1);
    }
    int status = 0;
    if (child < 0 || waitpid(child, &status, 0) != child)
        return 0;
    return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* gdb on PATH? */
static int find_gdb(char *out, size_t cap)
{
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/bin:/bin";
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, ":");
        snprintf(out, cap, "%.*s/gdb", (int)n, p);
        if (n && access(out, X_OK) == 0)
            return 0;
        p += n + (p[n] == ':');
    }
    return -1;
}

/* One line naming why not, or NULL: the process can be attached to (or detached from). */
static const char *refusal(int pid, const char *shim, int detach, char *why, size_t cap)
{
    char status[8192], uid[128], my[32];
    if (pid == (int)getpid())
        return snprintf(why, cap, "that is this tool itself"), why;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    if (read_text(path, status, sizeof status) <= 0)
        return snprintf(why, cap, "no such process"), why;
    char tracer[32], state[32];
    status_field(status, "TracerPid", tracer, sizeof tracer);
    if (atoi(tracer) > 0)
        return snprintf(why, cap, "it is being traced already (by process %d: a debugger, strace?)", atoi(tracer)), why;
    status_field(status, "State", state, sizeof state);
    if (state[0] == 'Z' || state[0] == 'X')
        return snprintf(why, cap, "it has exited"), why;
    int cap_ptrace = have_cap_sys_ptrace();
    status_field(status, "Uid", uid, sizeof uid);
    snprintf(my, sizeof my, "%d", (int)getuid());
    int other_user = 0;
    for (char *t = strtok(uid, " \t"); t; t = strtok(NULL, " \t")) /* real, effective, saved, fs */
        other_user |= strcmp(t, my) != 0;
    if (other_user && !cap_ptrace)
        return snprintf(why, cap,
                        "it runs as another user and this tool lacks CAP_SYS_PTRACE (run it as that user or "
                        "as root)"),
               why;
    int scope = ptrace_scope();
    if (scope >= 3)
        return snprintf(why, cap, "kernel.yama.ptrace_scope is %d: no process may be traced until reboot", scope), why;
    if (scope >= 1 && !cap_ptrace)
        return snprintf(why, cap,
                        "kernel.yama.ptrace_scope is %d and this tool lacks CAP_SYS_PTRACE (run as root, or set "
                        "kernel.yama.ptrace_scope=0)",
                        scope),
               why;
    maps_facts m;
    if (read_maps(pid, &m) != 0)
        return snprintf(why, cap, "cannot read its memory map: %s", strerror(errno)), why;
    if (auxv_base(pid) == 0 || !m.loader)
        return snprintf(why, cap, "it is statically linked: there is no dynamic loader to load libleakshim.so with"),
               why;
    if (!m.libc)
        return snprintf(why, cap, "it does not use glibc, which the shim needs"), why;
    if (!same_ns(pid, "pid"))
        return snprintf(why, cap, "it runs in another PID namespace (a container): attach from inside it"), why;
    if (!same_ns(pid, "net"))
        return snprintf(why, cap,
                        "it runs in another network namespace: `leakshim dump` could not reach it; attach from inside "
                        "it"),
               why;
    if (!same_ns(pid, "mnt")) {
        char there[PATH_MAX + 64];
        struct stat a, b;
        snprintf(there, sizeof there, "/proc/%d/root%s", pid, shim);
        if (stat(shim, &a) != 0 || stat(there, &b) != 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino)
            return snprintf(why, cap, "it runs in another mount namespace where %.300s is not this library", shim), why;
    }
    if (m.shim && preloaded(pid))
        return snprintf(why, cap, "it already runs under leakshim (preloaded): use `leakshim dump %d`", pid), why;
    if (detach && !m.shim)
        return snprintf(why, cap, "leakshim is not attached to it"), why;
    if (seccomp_forbids_ptrace())
        return snprintf(why, cap, "a seccomp filter on this tool forbids ptrace, which gdb needs"), why;
    char gdb[PATH_MAX];
    if (find_gdb(gdb, sizeof gdb) != 0)
        return snprintf(why, cap, "gdb is not installed (apt-get install gdb): leakshim attaches through it"), why;
    return NULL;
}

/* ------------------------------------------------------------------ running gdb */

static double mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Runs gdb on pid with the script; its output (stdout and stderr) into out. The wait is bounded:
 * past the deadline gdb gets SIGINT (it stops waiting and detaches, removing its breakpoints),
 * and only if it still has not exited 10 s later is it killed. Returns gdb's exit status or -1. */
static int run_gdb(int pid, const char *shim, const char *opts, int detach, double timeout, char *out, size_t cap)
{
    char dir[] = "/tmp/leakshim-attach-XXXXXX";
    if (!mkdtemp(dir))
        return snprintf(out, cap, "cannot create a temporary directory: %s", strerror(errno)), -1;
    char script[sizeof dir + 16], outfile[sizeof dir + 16];
    snprintf(script, sizeof script, "%s/attach.py", dir);
    snprintf(outfile, sizeof outfile, "%s/out", dir);
    int fd = open(script, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    int ok = fd >= 0 && write(fd, gdb_script, sizeof gdb_script - 1) == (ssize_t)(sizeof gdb_script - 1);
    if (fd >= 0)
        close(fd);
    int ofd = ok ? open(outfile, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600) : -1;
    int status = -1;
    if (ofd >= 0) {
        char pidstr[16], tmo[32];
        snprintf(pidstr, sizeof pidstr, "%d", pid);
        snprintf(tmo, sizeof tmo, "%g", timeout);
        pid_t child = fork();
        if (child == 0) {
            int devnull = open("/dev/null", O_RDONLY);
            dup2(devnull, 0);
            dup2(ofd, 1);
            dup2(ofd, 2);
            setenv("LEAKSHIM_ATTACH_LIB", shim, 1);
            setenv("LEAKSHIM_ATTACH_OPTS", opts ? opts : "", 1);
            setenv("LEAKSHIM_ATTACH_MODE", detach ? "detach" : "attach", 1);
            setenv("LEAKSHIM_ATTACH_TIMEOUT", tmo, 1);
            unsetenv("DEBUGINFOD_URLS");
            /* Only libc's exported symbols: no debug files to read (half the time the process is
             * stopped), no other library's symbols (a Python process has hundreds). */
            execlp("gdb", "gdb", "-nx", "-q", "-batch", "-iex", "set debuginfod enabled off", "-iex",
                   "set debug-file-directory /nonexistent", "-iex", "set auto-solib-add off", "-p", pidstr, "-x",
                   script, (char *)NULL);
            _exit(127);
        }
        if (child > 0) {
            double deadline = mono() + timeout + 15; /* the script's own wait is `timeout` */
            int sent = 0;
            for (;;) {
                pid_t r = waitpid(child, &status, WNOHANG);
                if (r == child || (r < 0 && errno != EINTR))
                    break;
                if (mono() > deadline && sent < 2) {
                    kill(child, sent ? SIGKILL : SIGINT);
                    sent++;
                    deadline = mono() + 10;
                }
                struct timespec step = {0, 20 * 1000 * 1000};
                nanosleep(&step, NULL); /* polling gdb's exit, bounded by the deadline */
            }
        }
        lseek(ofd, 0, SEEK_SET);
        ssize_t n = read(ofd, out, cap - 1);
        out[n > 0 ? n : 0] = 0;
        close(ofd);
    } else
        snprintf(out, cap, "cannot write gdb's script in %s", dir);
    unlink(script);
    unlink(outfile);
    rmdir(dir);
    return status;
}

/* The value of a "LEAKSHIM-<key> ..." line in gdb's output, or NULL. */
static const char *result_line(char *out, const char *key, char *val, size_t cap)
{
    char tag[32];
    snprintf(tag, sizeof tag, "LEAKSHIM-%s ", key);
    for (char *p = out; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncmp(p, tag, strlen(tag))) {
            const char *v = p + strlen(tag);
            snprintf(val, cap, "%.*s", (int)strcspn(v, "\n"), v);
            return val;
        }
    return NULL;
}

/* gdb's own words for a failed attach ("ptrace: Operation not permitted."), as one line. */
static void gdb_failure(char *out, int pid, char *why, size_t cap)
{
    const char *p = strstr(out, "ptrace:");
    char st[8192], sec[16] = "";
    if (read_text("/proc/self/status", st, sizeof st) > 0)
        status_field(st, "Seccomp", sec, sizeof sec);
    if (p) {
        snprintf(why, cap, "gdb could not trace it (%.*s)%s", (int)strcspn(p, "\n"), p,
                 !strcmp(sec, "2") ? "; a seccomp filter on this tool may forbid ptrace" : "");
        return;
    }
    (void)pid;
    const char *last = out;
    for (const char *q = out; *q; q++)
        if (q[0] == '\n' && q[1])
            last = q + 1;
    snprintf(why, cap, "gdb failed: %.*s", (int)strcspn(last, "\n"), *last ? last : "no output");
}

/* ------------------------------------------------------------------ the command */

static int parse_pid(const char *a, int *pid)
{
    char *end;
    errno = 0;
    long v = a ? strtol(a, &end, 10) : 0;
    if (!a || !isdigit((unsigned char)a[0]) || *end || errno || v <= 0 || v > INT_MAX)
        return -1;
    *pid = (int)v;
    return 0;
}

typedef struct attach_args {
    const char *opts, *pidarg;
    double timeout;
    int verbose;
} attach_args;

/* The flags both commands read: --timeout, --verbose, and the PID. 1 taken, 0 not one of them,
 * -1 a bad value (said). */
static int common_arg(const char *cmd, int argc, char **argv, int *i, attach_args *x)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--timeout") || !strncmp(a, "--timeout=", 10)) {
        const char *v = a[9] == '=' ? a + 10 : (*i + 1 < argc ? argv[++*i] : "");
        char *end;
        x->timeout = strtod(v, &end);
        if (!*v || *end || !(x->timeout > 0) || x->timeout > 3600) {
            fprintf(stderr, "%s: --timeout takes a number of seconds (0 < N <= 3600), not '%s'\n", cmd, v);
            return -1;
        }
        return 1;
    }
    if (!strcmp(a, "--verbose"))
        return x->verbose = 1;
    if (a[0] != '-' && !x->pidarg) {
        x->pidarg = a;
        return 1;
    }
    return 0;
}

static int attach_or_detach(int detach, const attach_args *x, const ls_attach_env *env);

int ls_tool_attach(int argc, char **argv, const ls_attach_env *env)
{
    attach_args x = {.timeout = 20};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int r;
        if (!strcmp(a, "--options") || !strncmp(a, "--options=", 10)) {
            if (a[9] != '=' && i + 1 >= argc) {
                fprintf(stderr, "leakshim attach: --options needs a value\n");
                return 2;
            }
            x.opts = a[9] == '=' ? a + 10 : argv[++i];
        } else if ((r = common_arg("leakshim attach", argc, argv, &i, &x)) <= 0) {
            if (!r)
                fprintf(stderr, "leakshim attach: unknown argument '%s' (see leakshim attach --help)\n", a);
            return 2;
        }
    }
    return attach_or_detach(0, &x, env);
}

int ls_tool_detach(int argc, char **argv, const ls_attach_env *env)
{
    attach_args x = {.timeout = 20};
    for (int i = 0; i < argc; i++) {
        int r = common_arg("leakshim detach", argc, argv, &i, &x);
        if (r <= 0) {
            if (!r)
                fprintf(stderr, "leakshim detach: unknown argument '%s' (see leakshim detach --help)\n", argv[i]);
            return 2;
        }
    }
    return attach_or_detach(1, &x, env);
}

static int attach_or_detach(int detach, const attach_args *x, const ls_attach_env *env)
{
    const char *cmd = detach ? "leakshim detach" : "leakshim attach";
    const char *opts = x->opts, *pidarg = x->pidarg;
    double timeout = x->timeout;
    int verbose = x->verbose;
    int pid;
    if (parse_pid(pidarg, &pid) != 0) {
        fprintf(stderr, "%s: expected a PID (see %s --help)\n", cmd, cmd);
        return 2;
    }
    for (const char *p = opts; p && *p; p++)
        if (!isprint((unsigned char)*p)) {
            fprintf(stderr, "%s: --options must be printable text\n", cmd);
            return 2;
        }
    if (opts && env->check_options(opts, pid) > 0)
        return 2; /* each problem printed */
    char shim[PATH_MAX], why[1024], name[64];
    if (env->find_shim(shim, sizeof shim) != 0) {
        fprintf(stderr, "%s: libleakshim.so cannot be found (set LEAKSHIM_LIB)\n", cmd);
        return 1;
    }
    char real[PATH_MAX];
    if (realpath(shim, real))
        snprintf(shim, sizeof shim, "%s", real);
    if (refusal(pid, shim, detach, why, sizeof why)) {
        fprintf(stderr, "%s: cannot %s process %d (%s): %s\n", cmd, detach ? "detach from" : "attach to", pid,
                prog_name(pid, name, sizeof name), why);
        return 1;
    }
    static char out[1 << 16];
    int st = run_gdb(pid, shim, opts, detach, timeout, out, sizeof out);
    if (verbose)
        fprintf(stderr, "%s: gdb said:\n%s", cmd, out);
    char val[512];
    if (result_line(out, "ERROR", val, sizeof val)) {
        fprintf(stderr, "%s: process %d (%s): %s\n", cmd, pid, prog_name(pid, name, sizeof name), val);
        return 1;
    }
    if (!result_line(out, "RESULT", val, sizeof val)) {
        gdb_failure(out, pid, why, sizeof why);
        fprintf(stderr, "%s: process %d (%s): %s%s\n", cmd, pid, prog_name(pid, name, sizeof name), why,
                st < 0 ? "" : "");
        return 1;
    }
    int r = atoi(val);
    prog_name(pid, name, sizeof name);
    if (detach) {
        if (r < 0) {
            fprintf(stderr, "%s: process %d (%s): leakshim is %s\n", cmd, pid, name,
                    r == -2 ? "preloaded there, not attached" : "not attached (or detached already)");
            return 1;
        }
        printf("leakshim: detached from process %d (%s): its hooks pass every call through; the library stays "
               "loaded (`leakshim attach %d` resumes)\n",
               pid, name, pid);
        return fflush(stdout) == 0 ? 0 : 1;
    }
    if (r < 0) {
        fprintf(stderr, "%s: process %d (%s): %s\n", cmd, pid, name,
                r == -1   ? "leakshim is attached already (`leakshim detach` it first to re-attach)"
                : r == -2 ? "it already runs under leakshim (preloaded)"
                          : "the options are too long");
        return 1;
    }
    printf("leakshim: attached to process %d (%s): %d database %s already open (listed as opened before attach); "
           "`leakshim dump %d` for a snapshot, `leakshim detach %d` to stop\n",
           pid, name, r, r == 1 ? "connection" : "connections", pid, pid);
    return fflush(stdout) == 0 ? 0 : 1;
}
