/* The fixed pq_errpath: the error path finishes its connection too. */
#define FIXED 1
#include "pq_errpath_leak.c"
