/* libFuzzer target: the suppressions file parser on arbitrary bytes (no files: the buffer entry
 * point). Beyond "no crash, no UB": no empty pattern is ever stored (it would suppress every
 * leak), the count is bounded by the lines, and each buffer gives at most one warning, one
 * printable line. `make fuzz`. */
#include "ls_internal.h"

#include <fcntl.h>
#include <sanitizer/common_interface_defs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Reported on the real stderr: fd 2 may be borrowed or closed (-close_fd_mask=2) by then. */
static int report_fd = 2;
#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            dprintf(report_fd, "fuzz_%s: invariant failed: %s (line %d)\n", "suppress", #cond, __LINE__);              \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

/* ls_warn writes to fd 2: each run points fd 2 at this memfd to read the warnings back. */
static int warn_fd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    warn_fd = memfd_create("warnings", MFD_CLOEXEC);
    /* sanitizer reports keep going to the real stderr even while fd 2 is borrowed */
    int real = fcntl(2, F_DUPFD_CLOEXEC, 3);
    if (real >= 0) {
        report_fd = real;
        __sanitizer_set_report_fd((void *)(long)real);
    }
    return warn_fd < 0;
}

static size_t warnings(char *buf, size_t cap)
{
    ssize_t n = pread(warn_fd, buf, cap - 1, 0);
    buf[n > 0 ? n : 0] = 0;
    return n > 0 ? (size_t)n : 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    const char *d = (const char *)data;
    size_t lines = 0, content = 0; /* all lines; lines neither blank nor comments */
    for (size_t i = 0; i < size;) {
        size_t j = i;
        while (j < size && (d[j] == ' ' || d[j] == '\t' || d[j] == '\r'))
            j++;
        content += j < size && d[j] != '\n' && d[j] != '#';
        while (j < size && d[j] != '\n')
            j++;
        lines++;
        i = j + 1;
    }

    ls_suppressions_clear();
    /* fd 2 will share warn_fd's file offset: rewind it as well as emptying the file */
    CHECK(ftruncate(warn_fd, 0) == 0 && lseek(warn_fd, 0, SEEK_SET) == 0);
    int keep = dup(2);
    CHECK(keep >= 0 && dup2(warn_fd, 2) == 2);
    int r = ls_suppressions_parse(d, size, "fuzz.supp");
    dup2(keep, 2);
    close(keep);

    int n = ls_suppressions_count();
    if (memchr(d, 0, size))
        CHECK(r == -1 && n == 0); /* not a text file: refused as a whole */
    else
        CHECK(r == n);
    CHECK(n >= 0 && (size_t)n <= lines);

    for (int i = 0; i < n; i++) {
        const char *p = ls_suppressions_pattern(i);
        CHECK(p != NULL);
        size_t len = strlen(p);
        CHECK(len > 0 && len <= LS_SUPP_MAX_PATTERN);
        /* what remains once the anchors are taken off is never empty */
        size_t core = len - (p[0] == '^');
        if (core && p[len - 1] == '$')
            core--;
        CHECK(core > 0);
        for (size_t j = 0; j < len; j++)
            CHECK(((unsigned char)p[j] >= 0x20 || p[j] == '\t') && p[j] != 0x7f);
        CHECK(p[0] != ' ' && p[len - 1] != ' ' && p[len - 1] != '\r');
        /* every stored pattern came from a "leak:" line of the input */
        CHECK(memmem(d, size, p, len) != NULL);
    }
    CHECK(ls_suppressions_pattern(n) == NULL);

    /* at most one warning per buffer, one printable line that fits ls_warn's buffer */
    char w[2048];
    size_t wl = warnings(w, sizeof w);
    /* every content line is a pattern or a bad line: a warning exactly when one was refused */
    CHECK(!wl == (r >= 0 && (size_t)r == content));
    if (wl) {
        CHECK(wl < 512 && w[wl - 1] == '\n' && memchr(w, '\n', wl) == w + wl - 1);
        for (size_t i = 0; i + 1 < wl; i++)
            CHECK(w[i] >= 0x20 && w[i] < 0x7f);
        CHECK(!strncmp(w, "leakshim: suppressions file 'fuzz.supp'", 39));
    }

    /* matching with whatever was stored: short names keep fnmatch's backtracking small */
    ls_suppressions_match("main");
    ls_suppressions_match("libpq.so.5");
    CHECK(!ls_suppressions_match(""));
    return 0;
}

/* ls_stack_suppressed (not fuzzed here) is the only user of the stack table: these stand-ins keep
 * stack.c, libunwind and the rest of the core out of this target. */
const ls_stack *ls_stack_get(ls_stack_id id)
{
    (void)id;
    return NULL;
}

void ls_symbolize(void *pc, ls_sym *out)
{
    (void)pc;
    memset(out, 0, sizeof *out);
}
