/* The fixed mysql sample: the error path closes its connection too. */
#define FIXED 1
#include "mysql_leak.c"
