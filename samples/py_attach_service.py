"""A small threaded psycopg2 service, meant to be started WITHOUT the shim and diagnosed with
`leakshim attach PID` (README "Attaching to a running process"; tests/integration/test_attach.py).

    python3 py_attach_service.py DSN

Opens one PostgreSQL connection at start (held for the whole run), listens on 127.0.0.1 (an
ephemeral port, printed as "port N") and serves one line per client connection, a thread each:
    ping   SELECT 1 on the shared connection, answers "ok"
    leak   opens a report connection and keeps it in a list, never closed (the bug), answers "ok"
    pool   makes a psycopg2 pool and checks a connection out, never returned (psycopg2.pool is
           imported at start: an attach after that must patch the module already imported)
    quit   answers "bye"; the process then exits normally (so the exit report runs)
"""
import socketserver
import sys
import threading

import psycopg2
import psycopg2.pool

DSN = sys.argv[1]
shared = psycopg2.connect(DSN)  # opened before any attach
shared_lock = threading.Lock()
reports = []
pools = []
done = threading.Event()


def open_report_connection():
    conn = psycopg2.connect(DSN)  # the bug: kept, never closed
    reports.append(conn)
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
    return True


def checkout_and_forget():
    pool = psycopg2.pool.ThreadedConnectionPool(1, 2, DSN)
    pools.append(pool)
    conn = pool.getconn()  # the bug: never put back
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
    return True


def ping():
    with shared_lock, shared.cursor() as cur:
        cur.execute("SELECT 1")
        return cur.fetchone() == (1,)


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline().strip()
        if line == b"ping":
            answer = b"ok\n" if ping() else b"error\n"
        elif line == b"leak":
            answer = b"ok\n" if open_report_connection() else b"error\n"
        elif line == b"pool":
            answer = b"ok\n" if checkout_and_forget() else b"error\n"
        elif line == b"quit":
            answer = b"bye\n"
            done.set()
        else:
            answer = b"error\n"
        self.wfile.write(answer)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    request_queue_size = 128


server = Server(("127.0.0.1", 0), Handler)
print("port", server.server_address[1], flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
done.wait()
server.shutdown()
