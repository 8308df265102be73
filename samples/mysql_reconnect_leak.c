/* MariaDB/MySQL auto-reconnect (MYSQL_OPT_RECONNECT): the server drops the session (here: KILL
 * from an admin connection), and the next mysql_ping() reconnects inside the driver, which swaps
 * a fresh connection into the same MYSQL handle. The handle then leaks: the report must show
 * exactly one MariaDB handle never freed, holding one (the new) connection, created in
 * open_session -- not a second handle for the driver's private reconnect, and not the new socket
 * as an unowned leak. mysql_reconnect_fixed.c (FIXED) closes the handle: nothing is reported.
 *
 * Usage: mysql_reconnect_leak [HOST [PORT [USER [PASSWORD]]]]   (defaults as mysql_leak) */
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>

static MYSQL *connect_to(const char *host, unsigned port, const char *user, const char *pw, int reconnect)
{
    MYSQL *m = mysql_init(NULL);
    my_bool on = 1;
    if (reconnect)
        mysql_options(m, MYSQL_OPT_RECONNECT, &on);
    int unix_socket = host[0] == '/';
    if (!mysql_real_connect(m, unix_socket ? "localhost" : host, user, pw, NULL, unix_socket ? 0 : port,
                            unix_socket ? host : NULL, 0)) {
        fprintf(stderr, "connect: %s\n", mysql_error(m));
        mysql_close(m);
        return NULL;
    }
    return m;
}

static MYSQL *open_session(const char *host, unsigned port, const char *user, const char *pw)
{
    return connect_to(host, port, user, pw, 1);
}

int main(int argc, char **argv)
{
    const char *host = argc > 1 ? argv[1] : getenv("MYSQL_HOST");
    const char *port_s = argc > 2 ? argv[2] : getenv("MYSQL_TCP_PORT");
    const char *user = argc > 3 ? argv[3] : "root", *pw = argc > 4 ? argv[4] : "";
    unsigned port = port_s ? (unsigned)atoi(port_s) : 3306;
    if (!host)
        host = "127.0.0.1";
    MYSQL *m = open_session(host, port, user, pw);
    if (!m)
        return 1;
    unsigned long before = mysql_thread_id(m);

    MYSQL *admin = connect_to(host, port, user, pw, 0);
    if (!admin)
        return 1;
    char sql[64];
    snprintf(sql, sizeof sql, "KILL %lu", before);
    if (mysql_query(admin, sql) != 0)
        fprintf(stderr, "kill: %s\n", mysql_error(admin));
    mysql_close(admin);

    /* The first ping may report the lost connection; the driver reconnects on the next one. */
    int rc = mysql_ping(m);
    if (rc != 0)
        rc = mysql_ping(m);
    unsigned long after = mysql_thread_id(m);
    printf("ping %s, session %lu -> %lu (%s)\n", rc == 0 ? "ok" : mysql_error(m), before, after,
           after != before ? "reconnected" : "same");
#ifdef FIXED
    mysql_close(m);
#endif
    mysql_library_end();
    return after != before ? 0 : 3;
}
