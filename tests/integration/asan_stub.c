/*
 * Preloaded after libasan by the integration tests when they run the ASan-built shim
 * (make integration-asan; tests/integration/helpers.py). Not part of the shim.
 *
 * ASan preloaded into an uninstrumented program initializes on the first malloc. In a program
 * linking libpq or MariaDB's client that malloc is inside p11-kit's constructor, in newlocale()
 * with glibc's locale lock held for writing; ASan's initialization then looks up swift_demangle
 * with dlsym and clears the failure with dlerror(), whose message translation takes and "releases"
 * that same lock. The lock is left corrupt, and every later setlocale/newlocale/freelocale (p11-kit's
 * destructor at exit) deadlocks. With this definition the dlsym succeeds and dlerror() is never
 * asked to translate anything. Returning NULL means "not a Swift name": ASan falls back to its C++
 * demangler.
 */
#include <stddef.h>
#include <stdint.h>

__attribute__((visibility("default"))) char *swift_demangle(const char *name, size_t len, char *out, size_t *outlen,
                                                            uint32_t flags)
{
    (void)name, (void)len, (void)out, (void)outlen, (void)flags;
    return NULL;
}
