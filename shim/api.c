/* The public C API (shim/include/leakshim.h, installed as include/leakshim.h): attribution
 * contexts, the creation counter and "what is still open since then" as JSON. Each entry point
 * runs inside the recursion guard (building a report opens and closes files of its own) and does
 * its work on a private stack: the caller's thread may have a small one. */
#include "ls_internal.h"
#define LEAKSHIM_WEAK /* the definitions are strong */
#include "include/leakshim.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

LEAKSHIM_EXPORT int leakshim_api_version(void)
{
    return LEAKSHIM_API_VERSION;
}

struct intern_args {
    const char *label, *phase;
    uint32_t id;
};
static void intern_on_private_stack(void *arg)
{
    struct intern_args *a = arg;
    a->id = ls_attr_intern(a->label, a->phase);
}

LEAKSHIM_EXPORT int leakshim_set_context(const char *label, const char *phase)
{
    if (!label || !*label) {
        ls_attr_set_thread(0);
        return 0;
    }
    struct intern_args a = {label, phase, 0};
    int e = errno;
    ls_in_shim++;
    ls_on_private_stack(intern_on_private_stack, &a);
    ls_in_shim--;
    errno = e;
    ls_attr_set_thread(a.id);
    return a.id ? 0 : -1;
}

LEAKSHIM_EXPORT void leakshim_clear_context(void)
{
    ls_attr_set_thread(0);
}

LEAKSHIM_EXPORT unsigned long long leakshim_creations(void)
{
    return (unsigned long long)ls_seq_now();
}

struct live_args {
    uint64_t range[2];
    ls_buf b;
    int n, rc;
};
static void live_on_private_stack(void *arg)
{
    struct live_args *a = arg;
    a->rc = ls_report_live_in(a->range, 1, &a->b, NULL, &a->n);
    if (a->rc < 0 || a->b.oom || !a->b.data) {
        ls_buf_free(&a->b); /* here: free() is not bound for the caller's stack */
        a->rc = -1;
    }
}

LEAKSHIM_EXPORT char *leakshim_live_since(unsigned long long since, int *leaks)
{
    int e = errno;
    struct live_args a = {.range = {since, 0}};
    ls_in_shim++;
    ls_on_private_stack(live_on_private_stack, &a);
    ls_in_shim--;
    errno = e;
    if (a.rc < 0)
        return NULL;
    if (leaks)
        *leaks = a.n;
    return a.b.data; /* malloc'ed, NUL-terminated by ls_buf */
}

static void free_on_private_stack(void *report)
{
    free(report);
}

LEAKSHIM_EXPORT void leakshim_free(char *report)
{
    if (report)
        ls_on_private_stack(free_on_private_stack, report);
}
