/*
 * Which libc functions are bound when the shim loads (included by every shim file, through
 * ls_internal.h and ls_got.h).
 *
 * The shim is linked with lazy binding: a process pays the loader's lookup (700-900 instructions
 * a name) only for the functions the shim really calls, and most processes a suite starts under
 * the shim call few. The first call of a lazily bound function runs the loader's resolver, which
 * needs a few KB of stack: harmless in a constructor, on the shim's private stacks (altstack.c)
 * or its reporter thread, but not on a host's thread inside a hook, whose stack may be small.
 *
 * So the few functions that code on the host's stack calls are declared noplt here: every call
 * goes through the GOT, whose entry the loader fills when the shim loads (as -z now did for all);
 * the constructors call most of them anyway. Everything heavier (records, closes and dups of
 * tracked fds, the exit report, the C API) runs on a private stack (ls_on_private_stack).
 * tests/integration/test_binding.py runs hook-heavy programs under gdb with a breakpoint on every
 * PLT stub of the shim and fails on a call through one on a host's stack inside a hook: a function
 * a new host-stack path calls belongs in this list.
 */
#ifndef LS_BIND_H
#define LS_BIND_H

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__has_attribute) && __has_attribute(noplt)
#define LS_BIND_AT_LOAD(fn) extern __typeof__(fn) fn __attribute__((noplt));
#else
#define LS_BIND_AT_LOAD(fn) /* clang: no such attribute; the Makefile links a clang-built shim -z now */
#endif

/* every hook: errno saved and restored */
LS_BIND_AT_LOAD(__errno_location)
/* locks: the registry, the private stacks' pool, the dump signal's state */
LS_BIND_AT_LOAD(pthread_once)
LS_BIND_AT_LOAD(pthread_mutex_lock)
LS_BIND_AT_LOAD(pthread_mutex_unlock)
/* a private stack's first use maps it; the owner check is a raw getpid */
LS_BIND_AT_LOAD(mmap)
LS_BIND_AT_LOAD(syscall)
/* sigaction and signal() on the dump signal: every signal blocked while its state changes */
LS_BIND_AT_LOAD(pthread_sigmask)

/* strcmp's "equal?" without a call, for the paths that must not bind libc's strcmp: every
 * process's start-up (got.c), the exit of one that tracked nothing, a driver hook on the host's
 * stack. */
static inline int ls_same_str(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

#endif
