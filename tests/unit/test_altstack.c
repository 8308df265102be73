/* Private stacks (altstack.c): the work runs on another stack, nests, and unwinds back into the
 * caller's frames through the trampoline. */
#include "unit.h"

#include <pthread.h>
#include <string.h>

struct probe {
    uintptr_t sp;       /* an address on the stack the work ran on */
    uintptr_t inner_sp; /* the same, for a nested call */
    ls_stack_id stack;  /* a capture taken from inside the work */
    int depth_ok;       /* the work could use 64 KB of stack */
};

static void __attribute__((noipa)) nested(void *arg)
{
    volatile char here = 0;
    ((struct probe *)arg)->inner_sp = (uintptr_t)&here;
}

static void __attribute__((noipa)) work(void *arg)
{
    struct probe *p = arg;
    volatile char big[64 * 1024]; /* more than a small host thread could give */
    memset((char *)big, 1, sizeof big);
    p->depth_ok = big[0] == 1 && big[sizeof big - 1] == 1;
    p->sp = (uintptr_t)&big[0];
    ls_on_private_stack(nested, p);
    p->stack = ls_stack_capture();
}

/* The caller whose frame must show in the capture taken on the private stack. */
static void __attribute__((noipa)) host_frame(struct probe *p)
{
    ls_on_private_stack(work, p);
    __asm__ volatile("" ::: "memory"); /* not a tail call: host_frame stays on the stack */
}

static void work_runs_on_another_stack_and_unwinds_through(void **state)
{
    (void)state;
    volatile char mine = 0;
    struct probe p = {0};
    host_frame(&p);
    uintptr_t here = (uintptr_t)&mine;
    uintptr_t dist = p.sp > here ? p.sp - here : here - p.sp;
    assert_true(dist > 1024 * 1024); /* not just below the caller: a different mapping */
    assert_true(p.depth_ok);
    uintptr_t nd = p.inner_sp > p.sp ? p.inner_sp - p.sp : p.sp - p.inner_sp;
    assert_true(nd < 128 * 1024); /* nested: ran directly, on the same private stack */
    const ls_stack *s = ls_stack_get(p.stack);
    assert_non_null(s);
    int found_host = 0, found_test = 0;
    for (int i = 0; i < s->n; i++) {
        ls_sym sym;
        ls_symbolize(s->frames[i], &sym);
        found_host |= !strcmp(sym.symbol, "host_frame");
        found_test |= !strcmp(sym.symbol, "work_runs_on_another_stack_and_unwinds_through");
    }
    assert_true(found_host); /* unwinding crossed from the private stack into the caller's */
    assert_true(found_test);
}

static void *small_thread(void *arg)
{
    struct probe *p = arg;
    ls_on_private_stack(work, p); /* 64 KB of work on a 64 KB thread: only fits elsewhere */
    return NULL;
}

static void small_thread_stack_is_not_used(void **state)
{
    (void)state;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 64 * 1024);
    struct probe p = {0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, &a, small_thread, &p), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    pthread_attr_destroy(&a);
    assert_true(p.depth_ok);
}

static void stacks_are_reused_across_threads(void **state)
{
    (void)state;
    struct probe a = {0}, b = {0};
    ls_on_private_stack(work, &a);
    ls_on_private_stack(work, &b);
    assert_true(a.sp == b.sp); /* the pool handed the same stack back */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(work_runs_on_another_stack_and_unwinds_through),
        cmocka_unit_test(small_thread_stack_is_not_used),
        cmocka_unit_test(stacks_are_reused_across_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
