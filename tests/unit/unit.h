/* Shared bits for the cmocka unit tests: the core is linked directly, no preload. */
#ifndef UNIT_H
#define UNIT_H
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "ls_internal.h"

/* A listening TCP socket on 127.0.0.1 and an ephemeral port; returns the port. */
int unit_listen(int *lfd);
/* Default options, the registry, and a listener whose port counts as a database's. */
int unit_setup(int *lfd);
/* cmocka group setup/teardown around unit_setup: its listener and port in unit_lfd, unit_port. */
extern int unit_port, unit_lfd;
int unit_group_setup(void **state);
int unit_group_teardown(void **state);
/* socket + connect to 127.0.0.1:port, reported to the registry as the hook would. */
int unit_connect(int port);
/* close as the hook does it: forget first, then the real close. */
void unit_close(int fd);
/* A report of this kind as text and JSON (both zeroed first, both built). */
void unit_build_report(ls_buf *text, ls_buf *json, int kind, int *leaks);
#endif
