"""A unittest suite (run with `python3 -m unittest` under the shim): one test leaks in its body,
one class leaks in setUp, the others close what they open."""
import os
import unittest

import psycopg2

DSN = os.environ["LEAKY_DSN"]
KEPT = []


class Clean(unittest.TestCase):
    def setUp(self):
        self.c = psycopg2.connect(DSN)

    def tearDown(self):
        self.c.close()

    def test_clean(self):
        self.assertEqual(self.c.closed, 0)

    def test_leak(self):
        KEPT.append(psycopg2.connect(DSN))


class LeakInSetUp(unittest.TestCase):
    def setUp(self):
        KEPT.append(psycopg2.connect(DSN))

    def test_x(self):
        pass
