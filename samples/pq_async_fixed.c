/* The fixed pq_async: request_done() finishes the connection. */
#define FIXED 1
#include "pq_async_leak.c"
