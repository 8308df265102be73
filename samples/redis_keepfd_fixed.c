/* The fixed redis_keepfd sample: the detached socket is closed. */
#define FIXED 1
#include "redis_keepfd_leak.c"
