/* metrics=DIR: a Prometheus textfile (node_exporter's textfile collector) rewritten by the reporter
 * thread every interval= seconds and removed when the process exits.
 *
 * The collector's convention: write a temporary file in DIR, then rename it over the real one, so
 * a scrape never reads half a file; it reads only *.prom, so the temporary name ends in .tmp. The
 * file is created O_EXCL | O_NOFOLLOW in a directory that passes outfile.c's checks (not writable
 * by others without the sticky bit), never through a symbolic link. Mode 0644, unlike reports:
 * node_exporter usually runs as another user, and the file holds counts and the program's name
 * only (no address, no stack).
 *
 * Naming: every series carries program (the process's name) and slot (a small number that tells
 * processes of one program apart, e.g. the workers of one service: the lowest not taken by another
 * file of that program in DIR); pids are not labels (a restart would make new series), they are
 * in the file name, leakshim_PROGRAM_SLOT_PID.prom, and in leakshim_process_info. */
#include "ls_report.h"
#include "ls_outfile.h"
#include "ls_version.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

uint64_t ls_leak_warnings;

static pthread_mutex_t mx_lock = PTHREAD_MUTEX_INITIALIZER;
static int mx_closed, mx_warned, mx_slot = -1, mx_pid;
static char mx_name[128]; /* the file written last, in ls_opt.metrics */

/* A label value: \ " and newline escaped (the exposition format's rule). */
static void label(ls_buf *b, const char *k, const char *v)
{
    ls_buf_puts(b, k);
    ls_buf_puts(b, "=\"");
    for (const char *p = v; *p; p++) {
        if (*p == '\\' || *p == '"')
            ls_buf_printf(b, "\\%c", *p);
        else if (*p == '\n')
            ls_buf_puts(b, "\\n");
        else
            ls_buf_put(b, p, 1);
    }
    ls_buf_puts(b, "\"");
}

static void family(ls_buf *b, const char *name, const char *type, const char *help)
{
    ls_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{program="..",slot="..",extra} value */
static void sample(ls_buf *b, const char *name, const char *prog, int slot, const char *k1, const char *v1,
                   const char *k2, const char *v2, double v)
{
    char s[16];
    snprintf(s, sizeof s, "%d", slot);
    ls_buf_puts(b, name);
    ls_buf_puts(b, "{");
    label(b, "program", prog);
    ls_buf_puts(b, ",");
    label(b, "slot", s);
    if (k1) {
        ls_buf_puts(b, ",");
        label(b, k1, v1);
    }
    if (k2) {
        ls_buf_puts(b, ",");
        label(b, k2, v2);
    }
    ls_buf_puts(b, "} ");
    ls_buf_fixed(b, v, v == (double)(long long)v ? 0 : 3);
    ls_buf_puts(b, "\n");
}

void ls_metrics_render(ls_buf *b, const ls_counts *c, const char *prog, int pid, int slot, int leaks_now)
{
    char p[16];
    snprintf(p, sizeof p, "%d", pid);
    family(b, "leakshim_process_info", "gauge", "A process running under leakshim (always 1): its pid and version.");
    sample(b, "leakshim_process_info", prog, slot, "pid", p, "version", LEAKSHIM_VERSION, 1);
    family(b, "leakshim_open_connections", "gauge", "Database connections open now, by database and state.");
    for (int i = 0; i < c->nsvc; i++)
        for (int st = 0; st < LS_ST_COUNT; st++)
            sample(b, "leakshim_open_connections", prog, slot, "database", c->svc[i], "state", ls_state_name(st),
                   c->open[i][st]);
    family(b, "leakshim_checkouts_over_threshold", "gauge",
           "Connections checked out of a pool for longer than threshold= seconds.");
    sample(b, "leakshim_checkouts_over_threshold", prog, slot, NULL, NULL, NULL, NULL, c->over_threshold);
    family(b, "leakshim_oldest_checkout_seconds", "gauge",
           "How long the oldest checkout still held has been out of its pool (0 when none).");
    sample(b, "leakshim_oldest_checkout_seconds", prog, slot, NULL, NULL, NULL, NULL, c->oldest_checkout);
    family(b, "leakshim_leaked_at_exit", "gauge",
           "Connections, handles and checkouts the exit report would count as leaked if the process exited now.");
    if (leaks_now >= 0)
        sample(b, "leakshim_leaked_at_exit", prog, slot, NULL, NULL, NULL, NULL, leaks_now);
    family(b, "leakshim_connections_created_total", "counter", "Database connections created, by driver.");
    for (int d = 0; d < LS_DRV_COUNT; d++)
        if (c->open_by_driver[d] || c->closed_by_driver[d])
            sample(b, "leakshim_connections_created_total", prog, slot, "driver", ls_driver_name(d), NULL, NULL,
                   (double)(c->closed_by_driver[d] + (uint64_t)c->open_by_driver[d]));
    family(b, "leakshim_connections_closed_total", "counter", "Database connections closed, by driver.");
    for (int d = 0; d < LS_DRV_COUNT; d++)
        if (c->open_by_driver[d] || c->closed_by_driver[d])
            sample(b, "leakshim_connections_closed_total", prog, slot, "driver", ls_driver_name(d), NULL, NULL,
                   (double)c->closed_by_driver[d]);
    family(b, "leakshim_leak_warnings_total", "counter", "Live warnings written for checkouts held past threshold=.");
    sample(b, "leakshim_leak_warnings_total", prog, slot, NULL, NULL, NULL, NULL,
           (double)__atomic_load_n(&ls_leak_warnings, __ATOMIC_RELAXED));
}

/* The process's name as a file name and label: /proc/self/comm, [A-Za-z0-9_.-] kept. */
static void prog_name(char *out, size_t cap)
{
    char comm[64] = "";
    int fd = open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, comm, sizeof comm - 1) : -1;
    if (fd >= 0)
        ls_sys_close(fd);
    comm[n > 0 ? n : 0] = 0;
    size_t k = 0;
    for (const char *p = comm; *p && *p != '\n' && k + 1 < cap; p++)
        out[k++] =
            (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'
                ? *p
                : '_';
    out[k] = 0;
    if (!k)
        snprintf(out, cap, "unknown");
}

/* The slot: ours while no other file of this program claims it with a lower pid (two processes
 * that started together), else the lowest one no other file of this program claims. A file left
 * by a process that was killed keeps its slot (its pid may live in another pid namespace). */
static int choose_slot(int dfd, const char *prog, int pid)
{
    unsigned char taken[256] = {0};
    int lower_has_mine = 0;
    int d = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = d >= 0 ? fdopendir(d) : NULL;
    if (!dir && d >= 0)
        ls_sys_close(d);
    char pre[96];
    int plen = snprintf(pre, sizeof pre, "leakshim_%s_", prog);
    for (struct dirent *e; dir && (e = readdir(dir));) {
        int slot, other;
        char tail[8];
        if (strncmp(e->d_name, pre, (size_t)plen) || sscanf(e->d_name + plen, "%d_%d%7s", &slot, &other, tail) != 3 ||
            strcmp(tail, ".prom") || other == pid || slot < 0 || slot > 255)
            continue;
        taken[slot] = 1;
        if (slot == mx_slot && other < pid)
            lower_has_mine = 1;
    }
    if (dir)
        closedir(dir);
    if (mx_slot >= 0 && !lower_has_mine)
        return mx_slot;
    for (int s = 0; s < 256; s++)
        if (!taken[s])
            return s;
    return 255;
}

static int write_file(int dfd, const char *tmp, const char *name, const ls_buf *b)
{
    int fd = -1;
    for (int tries = 0; tries < 2 && fd < 0; tries++) {
        fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0 && errno == EEXIST) /* our own, left by a write that failed half-way */
            unlinkat(dfd, tmp, 0);
        else if (fd < 0)
            return -1;
    }
    if (fd < 0)
        return -1;
    (void)fchmod(fd, 0644);
    int ok = ls_write_all(fd, b->data, b->len) == 0;
    ls_sys_close(fd);
    if (!ok || renameat(dfd, tmp, dfd, name) != 0) {
        unlinkat(dfd, tmp, 0);
        return -1;
    }
    return 0;
}

/* How many things an exit report taken now would count as leaked: the model built from a copy of
 * the registry (no kernel check). Symbols only when suppressions need them. */
static int no_symbols(void *pc, ls_sym *out, int max)
{
    (void)pc;
    if (max > 0)
        memset(out, 0, sizeof *out);
    return 1;
}

static int leaks_now(void)
{
    ls_snapshot s;
    if (ls_registry_snapshot(&s, 0) < 0)
        return -1;
    ls_report_input in = {.kind = LS_REPORT_EXIT,
                          .now = ls_now(),
                          .threshold = ls_opt.threshold,
                          .snap = &s,
                          .symbolize = ls_suppressions_count() ? ls_symbolize_frames : no_symbols};
    ls_model m;
    int n = -1;
    if (ls_model_build(&m, &in) == 0) {
        n = m.sum.leaks;
        ls_model_free(&m);
    }
    ls_registry_snapshot_free(&s);
    return n;
}

/* Reporter thread. */
void ls_metrics_write(const ls_counts *c)
{
    char prog[64], why[256], name[128], tmp[160];
    prog_name(prog, sizeof prog);
    int leaks = leaks_now();
    pthread_mutex_lock(&mx_lock);
    int pid = (int)getpid();
    if (mx_pid != pid) { /* a forked child: the parent's file is the parent's */
        mx_pid = pid;
        mx_slot = -1;
        mx_name[0] = 0;
    }
    int dfd = mx_closed ? -1 : ls_out_dir_open(ls_opt.metrics, why, sizeof why);
    if (dfd < 0) {
        if (!mx_closed && !mx_warned++)
            ls_warn("metrics=%s: %s; no metrics file is written", ls_opt.metrics, why);
        pthread_mutex_unlock(&mx_lock);
        return;
    }
    int slot = choose_slot(dfd, prog, pid);
    snprintf(name, sizeof name, "leakshim_%s_%d_%d.prom", prog, slot, pid);
    snprintf(tmp, sizeof tmp, ".%s.tmp", name);
    ls_buf b = {0};
    ls_metrics_render(&b, c, prog, pid, slot, leaks);
    if (!b.oom && b.data && write_file(dfd, tmp, name, &b) == 0) {
        if (mx_name[0] && strcmp(mx_name, name)) /* the slot changed: the old name goes */
            unlinkat(dfd, mx_name, 0);
        snprintf(mx_name, sizeof mx_name, "%s", name);
        mx_slot = slot;
    } else if (!mx_warned++)
        ls_warn("metrics=%s: cannot write %s: %s", ls_opt.metrics, name, strerror(errno));
    ls_buf_free(&b);
    ls_sys_close(dfd);
    pthread_mutex_unlock(&mx_lock);
}

/* atfork child (no malloc, no lock taken): the reporter thread may have held the lock. */
void ls_metrics_after_fork(void)
{
    LS_MUTEX_REINIT(mx_lock);
    mx_closed = 0;
}

/* At exit (after the exit report): the file goes, and no later tick writes it again. */
void ls_metrics_remove(void)
{
    if (!ls_opt.metrics[0])
        return;
    pthread_mutex_lock(&mx_lock);
    mx_closed = 1;
    if (mx_name[0] && mx_pid == (int)getpid()) {
        char why[256];
        int dfd = ls_out_dir_open(ls_opt.metrics, why, sizeof why);
        if (dfd >= 0) {
            unlinkat(dfd, mx_name, 0);
            ls_sys_close(dfd);
        }
    }
    mx_name[0] = 0;
    pthread_mutex_unlock(&mx_lock);
}
