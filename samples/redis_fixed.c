/* The fixed redis sample: the cache-miss path frees its context too. */
#define FIXED 1
#include "redis_leak.c"
