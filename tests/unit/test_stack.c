/* Stack interning and symbolization. */
#include "unit.h"

#include <string.h>

static ls_stack_id __attribute__((noipa)) capture_here(void)
{
    ls_stack_id id = ls_stack_capture();
    __asm__ volatile("" ::: "memory"); /* keep the call from being a tail call */
    return id;
}

static ls_stack_id __attribute__((noipa)) capture_elsewhere(void)
{
    ls_stack_id id = ls_stack_capture() + 0;
    __asm__ volatile("" ::: "memory");
    return id;
}

static void identical_stacks_share_one_record(void **state)
{
    (void)state;
    void *a[] = {(void *)0x1000, (void *)0x2000, (void *)0x3000};
    void *b[] = {(void *)0x1000, (void *)0x2000, (void *)0x3001};
    ls_stack_id ia = ls_stack_intern(a, 3), ib = ls_stack_intern(b, 3);
    assert_true(ia != 0 && ib != 0);
    assert_int_not_equal(ia, ib);
    assert_int_equal(ls_stack_intern(a, 3), ia);
    assert_int_not_equal(ls_stack_intern(a, 2), ia); /* a prefix is another stack */
    const ls_stack *s = ls_stack_get(ia);
    assert_non_null(s);
    assert_int_equal(s->n, 3);
    assert_ptr_equal(s->frames[2], (void *)0x3000);
    assert_null(ls_stack_get(0));
    assert_null(ls_stack_get(100000));
}

static void many_stacks_stay_distinct(void **state)
{
    (void)state;
    /* enough to force hash collisions and table growth */
    static ls_stack_id ids[5000];
    for (int i = 0; i < 5000; i++) {
        void *f[2] = {(void *)(uintptr_t)(0x10000 + i), (void *)(uintptr_t)(i * 7)};
        ids[i] = ls_stack_intern(f, 2);
    }
    for (int i = 0; i < 5000; i++) {
        void *f[2] = {(void *)(uintptr_t)(0x10000 + i), (void *)(uintptr_t)(i * 7)};
        assert_int_equal(ls_stack_intern(f, 2), ids[i]);
        if (i)
            assert_int_not_equal(ids[i], ids[i - 1]);
    }
}

static void counts_creations(void **state)
{
    (void)state;
    void *f[] = {(void *)0xabc};
    ls_stack_id id = ls_stack_intern(f, 1);
    uint64_t before = ls_stack_get(id)->created;
    ls_stack_count(id);
    ls_stack_count(id);
    assert_int_equal(ls_stack_get(id)->created, before + 2);
}

static void python_stacks(void **state)
{
    (void)state;
    static const char *file = "app.py", *fn = "handler";
    ls_pyframe f[2] = {{file, fn, 10}, {file, "main", 20}};
    ls_stack_id id = ls_pystack_intern(f, 2);
    assert_true(id != 0);
    assert_int_equal(ls_pystack_intern(f, 2), id);
    f[0].line = 11;
    assert_int_not_equal(ls_pystack_intern(f, 2), id);
    const ls_stack *s = ls_stack_get(id);
    assert_true(s->is_py);
    assert_int_equal(s->pyframes[0].line, 10);
    assert_int_equal(ls_pystack_intern(f, 0), 0);
    assert_int_equal(ls_pystack_capture(), 0); /* no Python hook in this process */
}

/* One call site for every round: -O0 so the loop is neither unrolled nor peeled. */
static void __attribute__((noipa, optimize("O0"))) capture_rounds(ls_stack_id *out, int n)
{
    for (int i = 0; i < n; i++)
        out[i] = capture_here();
}

static void capture_is_stable_per_call_site(void **state)
{
    (void)state;
    ls_options_defaults(&ls_opt);
    ls_stack_id r[3], a, b;
    capture_rounds(r, 3);
    assert_int_equal(r[0], r[1]);
    assert_int_equal(r[1], r[2]);
    a = r[0];
    b = capture_elsewhere();
    assert_true(a != 0 && b != 0);
    assert_int_not_equal(a, b);
    /* symbolization names the function, even though it is static (read from .symtab) */
    ls_sym sym;
    int k; /* frame 0 is ls_stack_capture itself here: the test links the core, not the shim */
    const ls_stack *st = ls_stack_get(a);
    for (k = 0; k < st->n; k++) {
        ls_symbolize(st->frames[k], &sym);
        if (!strcmp(sym.symbol, "capture_here"))
            break;
    }
    assert_true(k < 2);
    assert_non_null(strstr(sym.module, "test_stack"));
    assert_int_equal(strlen(sym.build_id), 40);
    ls_opt.frames = 2;
    assert_true(ls_stack_get(capture_here())->n <= 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(identical_stacks_share_one_record),
        cmocka_unit_test(many_stacks_stay_distinct),
        cmocka_unit_test(counts_creations),
        cmocka_unit_test(python_stacks),
        cmocka_unit_test(capture_is_stable_per_call_site),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
