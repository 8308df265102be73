/* Symbol lookups without the loader (got.c, used at start-up instead of dlsym): they give
 * dlsym's answer or none, never another. Here "the shim" is this test program, which links
 * got.c: the objects after it are its libraries. */
#include "unit.h"

#include "ls_got.h"

#include <dlfcn.h>

static void next_symbols_are_what_rtld_next_finds(void **state)
{
    (void)state;
    static const char *const names[] = {"close",
                                        "socket",
                                        "connect",
                                        "write",
                                        "fclose",
                                        "sigaction",
                                        "__libc_start_main",
                                        "exit",
                                        "memcpy",
                                        "no_such_function_xyz"};
    enum { N = sizeof names / sizeof names[0] };
    void *addrs[N] = {0};
    size_t open = ls_got_next_symbols(names, addrs, N);
    size_t nulls = 0;
    for (size_t i = 0; i < N; i++) {
        nulls += addrs[i] == NULL;
        if (addrs[i])
            assert_ptr_equal(addrs[i], dlsym(RTLD_NEXT, names[i])); /* the same answer, or none */
    }
    assert_int_equal(open, nulls);
    for (size_t i = 0; i < 8; i++) /* plain functions: answered */
        assert_non_null(addrs[i]);
#ifndef __SANITIZE_ADDRESS__ /* ASan's runtime comes first with a plain memcpy of its own */
    assert_null(addrs[8]);   /* glibc's is an IFUNC: only the loader knows its target, left to dlsym */
#endif
    assert_null(addrs[9]); /* absent */
}

static void slots_already_filled_are_kept(void **state)
{
    (void)state;
    static const char *const names[] = {"close"};
    void *addrs[1] = {(void *)&state};
    assert_int_equal(ls_got_next_symbols(names, addrs, 1), 0);
    assert_ptr_equal(addrs[0], (void *)&state);
}

static void defined_sees_other_objects_and_new_ones(void **state)
{
    (void)state;
    assert_int_equal(ls_got_defined("_cmocka_run_group_tests"), 1); /* libcmocka */
    assert_int_equal(ls_got_defined("no_such_function_xyz"), 0);
    assert_int_equal(ls_got_defined("close"), 0); /* only glibc defines it: not asked about */
    /* libdw: a build dependency, and not loaded until something symbolizes */
    assert_int_equal(ls_got_defined("dwfl_begin"), 0);
    void *dw = dlopen("libdw.so.1", RTLD_NOW | RTLD_LOCAL);
    assert_non_null(dw);
    assert_int_equal(ls_got_defined("dwfl_begin"), 1); /* the cache follows the loader */
    assert_int_equal(ls_got_self_is_last(), 0);
    dlclose(dw);
}

static void program_is_not_last(void **state)
{
    (void)state;
    assert_int_equal(ls_got_self_is_last(), 0); /* the program comes first, its libraries after */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(next_symbols_are_what_rtld_next_finds),
        cmocka_unit_test(slots_already_filled_are_kept),
        cmocka_unit_test(defined_sees_other_objects_and_new_ones),
        cmocka_unit_test(program_is_not_last),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
