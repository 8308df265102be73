/* A program that defines names the shim uses internally: with the shim's symbols hidden and a
 * version script, both keep their own and the program behaves as without the shim. */
#include <stdio.h>

int ls_in_shim = 42;
int ls_opt = 7;
int ls_init(void)
{
    return 1;
}
int ls_on_connect(int a)
{
    return a + 1;
}
int ls_report_exit(void)
{
    return 99;
}
int ls_registry_init(void)
{
    return 5;
}

int main(void)
{
    printf("%d %d %d %d %d %d\n", ls_in_shim, ls_opt, ls_init(), ls_on_connect(1), ls_report_exit(),
           ls_registry_init());
    return 0;
}
