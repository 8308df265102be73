/* The public C API (shim/include/leakshim.h, installed as include/leakshim.h): attribution
 * contexts, the creation counter and "what is still open since then" as JSON. Each entry point
 * runs inside the recursion guard: building a report opens and closes files of its own. */
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

LEAKSHIM_EXPORT int leakshim_set_context(const char *label, const char *phase)
{
    if (!label || !*label) {
        ls_attr_set_thread(0);
        return 0;
    }
    int e = errno;
    ls_in_shim++;
    uint32_t id = ls_attr_intern(label, phase);
    ls_in_shim--;
    errno = e;
    ls_attr_set_thread(id);
    return id ? 0 : -1;
}

LEAKSHIM_EXPORT void leakshim_clear_context(void)
{
    ls_attr_set_thread(0);
}

LEAKSHIM_EXPORT unsigned long long leakshim_creations(void)
{
    return (unsigned long long)ls_seq_now();
}

LEAKSHIM_EXPORT char *leakshim_live_since(unsigned long long since, int *leaks)
{
    int e = errno, n = 0;
    uint64_t r[2] = {since, 0};
    ls_buf b = {0};
    ls_in_shim++;
    int rc = ls_report_live_in(r, 1, &b, NULL, &n);
    ls_in_shim--;
    errno = e;
    if (rc < 0 || b.oom || !b.data) {
        ls_buf_free(&b);
        return NULL;
    }
    if (leaks)
        *leaks = n;
    return b.data; /* malloc'ed, NUL-terminated by ls_buf */
}

LEAKSHIM_EXPORT void leakshim_free(char *report)
{
    free(report);
}
