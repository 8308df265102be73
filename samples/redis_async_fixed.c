/* The fixed redis_async sample: every context is disconnected (and so freed by hiredis). */
#define FIXED 1
#include "redis_async_leak.c"
