/* The fixed mysql_reconnect sample: the reconnected handle is closed. */
#define FIXED 1
#include "mysql_reconnect_leak.c"
