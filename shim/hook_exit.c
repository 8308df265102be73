/* The program's exit status for exitcode= (exitpolicy.c): main's return value, through a
 * __libc_start_main that runs main and notes what it returned, and exit()'s argument. Both are
 * pass-through: the real functions run with the same arguments and the status is unchanged. */
#include "ls_hook.h"

#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef int (*main_fn)(int, char **, char **);
static main_fn real_main;
static int (*real___libc_start_main)(main_fn, int, char **, void (*)(void), void (*)(void), void (*)(void), void *);
static void (*real_exit)(int);

static int main_wrapper(int argc, char **argv, char **envp)
{
    int r = real_main(argc, argv, envp);
    ls_exit_status_set(r);
    return r;
}

/* Before main, from the hash tables (ls_real_symbols): no loader lookup in every process. */
__attribute__((constructor)) static void resolve_exit_hooks(void)
{
    static const char *const names[] = {"__libc_start_main", "exit"};
    void **const reals[] = {(void **)&real___libc_start_main, (void **)&real_exit};
    ls_real_symbols(names, reals, 2);
}

LEAKSHIM_EXPORT int __libc_start_main(main_fn main, int argc, char **argv, void (*init)(void), void (*fini)(void),
                                      void (*rtld_fini)(void), void *stack_end)
{
    LS_RESOLVE(__libc_start_main);
    if (!real___libc_start_main)
        abort(); /* cannot happen in a dynamically linked program: there is always a libc */
    real_main = main;
    return real___libc_start_main(main_wrapper, argc, argv, init, fini, rtld_fini, stack_end);
}

LEAKSHIM_EXPORT void exit(int status)
{
    if (ls_registry_owner()) /* not a vfork child, which shares our memory */
        ls_exit_status_set(status);
    LS_RESOLVE(exit);
    if (real_exit)
        real_exit(status);
    syscall(SYS_exit_group, status); /* no libc exit to call: cannot happen */
    __builtin_unreachable();
}
