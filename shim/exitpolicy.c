/* Exit policy (issue 11): the program's own exit status, so that exitcode= only turns a run that
 * would exit 0 into a failure (a failing suite keeps its 1; LeakSanitizer replaces the status, we
 * deliberately do not), and whether this process is a child started by a test suite under the
 * shim (children=): such children report only to a file, never into a stderr the parent's test
 * may read, and do not gate their exit status unless asked.
 *
 * The status is recorded by hook_exit.c (main's return value through __libc_start_main, or an
 * exit() call); -1 while unknown (the shim was attached late, or main has not returned). */
#include "ls_internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int exit_status = -1;

void ls_exit_status_set(int status)
{
    __atomic_store_n(&exit_status, status & 0xff, __ATOMIC_RELEASE);
}

int ls_exit_status(void)
{
    return __atomic_load_n(&exit_status, __ATOMIC_ACQUIRE);
}

/* Does the parent process have this very shim mapped? Read at most once, at exit. */
static int parent_has_shim(void)
{
    char path[64], buf[8192];
    static const char name[] = "libleakshim";
    snprintf(path, sizeof path, "/proc/%d/maps", (int)getppid());
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    size_t keep = 0;
    int found = 0;
    for (;;) {
        ssize_t n = read(fd, buf + keep, sizeof buf - 1 - keep);
        if (n <= 0)
            break;
        buf[keep + (size_t)n] = 0;
        if (strstr(buf, name)) {
            found = 1;
            break;
        }
        /* keep the tail, so a name across two reads is still seen */
        size_t len = keep + (size_t)n;
        keep = len < sizeof name ? len : sizeof name - 1;
        memmove(buf, buf + len - keep, keep);
    }
    ls_sys_close(fd);
    return found;
}

static int started_by_test = -1;   /* PYTEST_CURRENT_TEST in our environment at start-up */
static char start_test[1024] = ""; /* its value then: the parent's test, not one of ours */

void ls_exitpolicy_init(void)
{
    const char *t = getenv("PYTEST_CURRENT_TEST");
    started_by_test = t && *t;
    if (started_by_test)
        snprintf(start_test, sizeof start_test, "%s", t);
}

const char *ls_inherited_test(void)
{
    return start_test;
}

/* A process started (exec'ed) by a test of a suite that runs under the shim: PYTEST_CURRENT_TEST
 * was in the environment it was started with and its parent has the shim loaded. A suite run
 * inside another, unshimmed suite (our own integration tests) is not a child. */
int ls_suite_child(void)
{
    static int answer = -1;
    if (answer < 0)
        answer = started_by_test > 0 && parent_has_shim();
    return answer;
}
