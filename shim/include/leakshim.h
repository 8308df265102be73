/*
 * leakshim.h: the public C API of libleakshim.so, for test harnesses and programs that want to
 * say which test (or request) is running and ask what it left open.
 *
 * The functions are declared weak: a program built with this header needs no -lleakshim and runs
 * unchanged without the shim; under the shim (LD_PRELOAD or `leakshim run`) they resolve to it.
 * Check that the shim is there before calling:
 *
 *     if (leakshim_api_version && leakshim_api_version() >= 1) { ... }
 *
 * Thread safety: every function may be called from any thread; the attribution context is per
 * thread. None may be called from a signal handler.
 */
#ifndef LEAKSHIM_H
#define LEAKSHIM_H

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this API. Functions are only ever added; a new version number says which. */
#define LEAKSHIM_API_VERSION 1

#ifndef LEAKSHIM_WEAK
#define LEAKSHIM_WEAK __attribute__((weak))
#endif

/* The API version the loaded shim implements (>= LEAKSHIM_API_VERSION if it has everything here). */
LEAKSHIM_WEAK int leakshim_api_version(void);

/* Attribution context of this thread: every database socket, driver handle and pool checkout
 * created from now on records it, and reports group by it ("3 created in test suite/test_a
 * (call)"). label: a test id, a route such as "POST /webhooks/{id}"; phase: "setup", "call",
 * "teardown", "request" or any short word (NULL = none). The strings are copied. A NULL or empty
 * label clears the context. Returns 0, or -1 if the label could not be stored (out of memory). */
LEAKSHIM_WEAK int leakshim_set_context(const char *label, const char *phase);
LEAKSHIM_WEAK void leakshim_clear_context(void);

/* A counter of tracked creations (sockets, driver handles, pools) and pool checkouts since the
 * process started. Take it before a test; pass it to leakshim_live_since after. */
LEAKSHIM_WEAK unsigned long long leakshim_creations(void);

/* The tracked connections created (or checked out) after the counter read `since` and still open
 * now, as a leakshim JSON report (the exit report's schema, shim/report.schema.json, restricted to
 * them; each socket and handle carries its "context"). *leaks (if not NULL) receives the number of
 * leaks the report counts. Returns a string to release with leakshim_free, or NULL (no memory). */
LEAKSHIM_WEAK char *leakshim_live_since(unsigned long long since, int *leaks);
LEAKSHIM_WEAK void leakshim_free(char *report);

#ifdef __cplusplus
}
#endif

#endif
