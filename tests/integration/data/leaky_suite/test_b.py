import pytest

from conftest import KEPT, connect


def test_module_leaky_1(module_conn_leaky):
    pass


def test_module_leaky_2(module_conn_leaky):
    pass


@pytest.mark.leakshim_allow(reason="known leak")
def test_allowed_leak():
    KEPT.append(connect())


def test_last_clean():
    pass
