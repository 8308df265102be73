from conftest import KEPT, connect


def test_clean():
    c = connect()
    c.close()


def test_leaks_two_in_body():
    KEPT.append(connect())
    KEPT.append(connect())


def test_garbage_is_not_a_leak():
    connect()  # no reference kept: closed by its finalizer


def test_clean_fixture(conn_closed):
    assert conn_closed.closed == 0


def test_leaky_fixture(conn_no_teardown):
    assert conn_no_teardown.closed == 0


def test_module_closed_1(module_conn_closed):
    pass


def test_module_closed_2(module_conn_closed):
    pass
