"""Fixtures of the leaky suite (run under the shim by tests/integration/test_pytest_plugin.py):
connections to the PostgreSQL at $LEAKY_DSN that some fixtures close and others do not."""
import os

import psycopg2
import pytest

DSN = os.environ["LEAKY_DSN"]
KEPT = []  # what the leaky ones keep alive: a leak, not garbage the collector closes


def connect():
    return psycopg2.connect(DSN)


@pytest.fixture
def conn_closed():
    c = connect()
    yield c
    c.close()


@pytest.fixture
def conn_no_teardown():
    c = connect()
    KEPT.append(c)
    return c


@pytest.fixture(scope="module")
def module_conn_closed():
    c = connect()
    yield c
    c.close()


@pytest.fixture(scope="module")
def module_conn_leaky():
    c = connect()
    KEPT.append(c)
    yield c
