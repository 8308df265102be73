/* A cmocka test harness using leakshim's public C API (include/leakshim.h): each test runs in an
 * attribution context named after it; its teardown asks the shim what the test left open and
 * fails the test when something is. Without the shim the API is absent (weak symbols) and the
 * harness runs as usual. Usage: api_harness PORT (a database listening on 127.0.0.1:PORT). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <leakshim.h>

static int port;
static unsigned long long since;

static int db_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static int have_shim(void)
{
    return leakshim_api_version && leakshim_api_version() >= LEAKSHIM_API_VERSION;
}

static int before(void **state)
{
    if (have_shim()) {
        since = leakshim_creations();
        assert_int_equal(leakshim_set_context((const char *)*state, "call"), 0);
    }
    return 0;
}

static int after(void **state)
{
    if (!have_shim())
        return 0;
    leakshim_clear_context();
    int leaks = -1;
    char *json = leakshim_live_since(since, &leaks);
    if (!json)
        return -1;
    printf("HARNESS %s leaks=%d\n", (const char *)*state, leaks);
    if (leaks) /* the report, for the test driving this harness */
        printf("HARNESS-JSON %s\n", strtok(json, "\n"));
    leakshim_free(json);
    return leaks ? -1 : 0;
}

static void test_clean(void **state)
{
    (void)state;
    close(db_connect());
}

static void test_leaky(void **state)
{
    (void)state;
    db_connect();
    db_connect();
}

static void test_clean_after(void **state)
{
    (void)state;
    int fd = db_connect();
    close(fd);
}

#define T(f) cmocka_unit_test_prestate_setup_teardown(f, before, after, (void *)#f)

int main(int argc, char **argv)
{
    port = argc > 1 ? atoi(argv[1]) : 5432;
    printf("HARNESS shim=%d\n", have_shim());
    const struct CMUnitTest tests[] = {T(test_clean), T(test_leaky), T(test_clean_after)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
