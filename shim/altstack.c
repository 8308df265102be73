/* Private stacks for the shim's heavy work, so a hook costs the host's stack a few hundred bytes.
 *
 * Recording a database socket captures native and Python stacks, may load libunwind, start the
 * reporter thread and allocate: several KB of stack, which a thread with a 16 KB stack (green
 * threads, small worker pools) does not have. ls_on_private_stack() runs that work on a stack
 * from a small pool instead. The trampoline keeps a frame-pointer frame with CFI on the host's
 * stack, so unwinders (libunwind capturing the host's stack from inside the work, gdb, perf) walk
 * from the private stack straight back into the host's frames.
 *
 * Pool, not per thread: a hook holds a stack only for its own duration, so a process needs as many
 * as it has threads inside a hook at once, and nothing leaks when threads come and go. */
#include "ls_internal.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ALT_SIZE (256 * 1024) /* room for dlopen, pthread_create and a CPython stack walk */
#define ALT_GUARD 4096

typedef struct alt {
    struct alt *next;
} alt;

static pthread_mutex_t alt_lock = PTHREAD_MUTEX_INITIALIZER;
static alt *alt_free;
static LS_TLS int on_alt;

/* void ls_call_on_stack(void (*fn)(void *), void *arg, void *top): calls fn(arg) with the stack
 * pointer at top (16-byte aligned) and returns on the caller's stack. */
void ls_call_on_stack(void (*fn)(void *), void *arg, void *top) __attribute__((visibility("hidden")));
#if defined(__x86_64__)
__asm__(".text\n"
        ".globl ls_call_on_stack\n"
        ".hidden ls_call_on_stack\n"
        ".type ls_call_on_stack,@function\n"
        "ls_call_on_stack:\n"
        ".cfi_startproc\n"
        "pushq %rbp\n"
        ".cfi_def_cfa_offset 16\n"
        ".cfi_offset %rbp, -16\n"
        "movq %rsp, %rbp\n"
        ".cfi_def_cfa_register %rbp\n"
        "movq %rdx, %rsp\n"
        "movq %rdi, %rax\n"
        "movq %rsi, %rdi\n"
        "callq *%rax\n"
        "movq %rbp, %rsp\n"
        "popq %rbp\n"
        ".cfi_def_cfa %rsp, 8\n"
        "ret\n"
        ".cfi_endproc\n"
        ".size ls_call_on_stack, .-ls_call_on_stack\n");
#define HAVE_TRAMPOLINE 1
#elif defined(__aarch64__)
__asm__(".text\n"
        ".globl ls_call_on_stack\n"
        ".hidden ls_call_on_stack\n"
        ".type ls_call_on_stack,%function\n"
        "ls_call_on_stack:\n"
        ".cfi_startproc\n"
        "stp x29, x30, [sp, -16]!\n"
        ".cfi_def_cfa_offset 16\n"
        ".cfi_offset 29, -16\n"
        ".cfi_offset 30, -8\n"
        "mov x29, sp\n"
        ".cfi_def_cfa_register 29\n"
        "mov sp, x2\n"
        "mov x9, x0\n"
        "mov x0, x1\n"
        "blr x9\n"
        "mov sp, x29\n"
        ".cfi_def_cfa 31, 16\n"
        "ldp x29, x30, [sp], 16\n"
        ".cfi_def_cfa_offset 0\n"
        "ret\n"
        ".cfi_endproc\n"
        ".size ls_call_on_stack, .-ls_call_on_stack\n");
#define HAVE_TRAMPOLINE 1
#else
#define HAVE_TRAMPOLINE 0
void ls_call_on_stack(void (*fn)(void *), void *arg, void *top)
{
    (void)top;
    fn(arg);
}
#endif

/* The alt header sits at the top of its mapping; the stack grows down from just below it. */
static alt *alt_get(void)
{
    pthread_mutex_lock(&alt_lock);
    alt *a = alt_free;
    if (a)
        alt_free = a->next;
    pthread_mutex_unlock(&alt_lock);
    if (a)
        return a;
    /* The lowest page stays PROT_NONE: an overflow faults instead of writing into a neighbour.
     * Two mmaps, not mmap and mprotect: this runs on the host's stack, where only functions
     * bound at load may be called (ls_bind.h), and mmap is one already. */
    char *m = mmap(NULL, ALT_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    if (mmap(m + ALT_GUARD, ALT_SIZE - ALT_GUARD, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK | MAP_FIXED, -1, 0) == MAP_FAILED) {
        syscall(SYS_munmap, m, ALT_SIZE);
        return NULL;
    }
    return (alt *)(m + ALT_SIZE - 64);
}

static void alt_put(alt *a)
{
    pthread_mutex_lock(&alt_lock);
    a->next = alt_free;
    alt_free = a;
    pthread_mutex_unlock(&alt_lock);
}

void ls_on_private_stack(void (*fn)(void *), void *arg)
{
    alt *a;
    if (!HAVE_TRAMPOLINE || on_alt || !(a = alt_get())) {
        fn(arg); /* already on one (a nested hook), or no memory: the host's stack it is */
        return;
    }
    on_alt = 1;
    ls_call_on_stack(fn, arg, (void *)((uintptr_t)a & ~(uintptr_t)15));
    on_alt = 0;
    alt_put(a);
}

/* atfork prepare/parent/child: the pool's lock is never inherited held. */
void ls_altstack_atfork(int phase)
{
    ls_mutex_atfork(&alt_lock, phase);
}
