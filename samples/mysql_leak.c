/* MariaDB/MySQL client: a handler that leaks its connection when the query fails.
 *
 * handle_request() connects and looks up a row; every odd request queries a table that does not
 * exist and returns on the error without mysql_close. The report shows one group of MariaDB
 * handles never freed, created in handle_request. mysql_fixed.c (FIXED) closes on every path.
 *
 * Usage: mysql_leak [HOST [PORT [USER [PASSWORD [REQUESTS]]]]]   HOST may be a Unix socket path
 *        (starts with '/'); defaults: $MYSQL_HOST or 127.0.0.1, $MYSQL_TCP_PORT or 3306, root, "",
 *        6 requests */
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>

struct db {
    const char *host, *user, *password;
    unsigned port;
};

static MYSQL *db_connect(const struct db *db)
{
    MYSQL *m = mysql_init(NULL);
    if (!m)
        return NULL;
    int unix_socket = db->host[0] == '/';
    if (!mysql_real_connect(m, unix_socket ? "localhost" : db->host, db->user, db->password, NULL,
                            unix_socket ? 0 : db->port, unix_socket ? db->host : NULL, 0)) {
        fprintf(stderr, "connect: %s\n", mysql_error(m));
        mysql_close(m);
        return NULL;
    }
    return m;
}

static int handle_request(const struct db *db, int id)
{
    MYSQL *m = db_connect(db);
    if (!m)
        return -1;
    const char *sql = id % 2 ? "SELECT x FROM no_such_db.no_such_table" : "SELECT 40 + 2";
    if (mysql_query(m, sql) != 0) {
        fprintf(stderr, "request %d: %s\n", id, mysql_error(m));
#ifdef FIXED
        mysql_close(m);
#endif
        return -1; /* the error path */
    }
    MYSQL_RES *res = mysql_store_result(m);
    MYSQL_ROW row = res ? mysql_fetch_row(res) : NULL;
    printf("request %d: %s\n", id, row && row[0] ? row[0] : "(none)");
    mysql_free_result(res);
    mysql_close(m);
    return 0;
}

int main(int argc, char **argv)
{
    struct db db = {
        .host = argc > 1 ? argv[1] : getenv("MYSQL_HOST"),
        .user = argc > 3 ? argv[3] : "root",
        .password = argc > 4 ? argv[4] : "",
    };
    const char *port = argc > 2 ? argv[2] : getenv("MYSQL_TCP_PORT");
    int n = argc > 5 ? atoi(argv[5]) : 6, failed = 0;
    if (!db.host)
        db.host = "127.0.0.1";
    db.port = port ? (unsigned)atoi(port) : 3306;
    for (int i = 0; i < n; i++)
        failed += handle_request(&db, i) != 0;
    printf("served %d requests, %d failed\n", n, failed);
    mysql_library_end();
    return 0;
}
