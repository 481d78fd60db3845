"""Runs handler.py against a real server.

The connection comes from the libpq environment (PGHOST, PGPORT, PGUSER,
PGDATABASE), in a database where ../schema.sql was loaded.
Run: python3 test_handler.py
"""
import threading
import time
import unittest

import psycopg

from handler import create_payment

BODY = {"amount": 100, "currency": "EUR"}


def connect():
    return psycopg.connect("", autocommit=True)


class CreatePaymentTest(unittest.TestCase):
    def setUp(self):
        self.conn = connect()

    def tearDown(self):
        self.conn.close()

    def payments(self):
        return self.conn.execute("SELECT count(*) FROM payments").fetchone()[0]

    def test_claimed_then_replayed(self):
        before = self.payments()
        status, body = create_payment(self.conn, "py-replay", BODY)
        self.assertEqual(status, 201)
        self.assertIn("id", body)
        # the retry gets the same response, and nothing is paid twice
        self.assertEqual(create_payment(self.conn, "py-replay", BODY), (201, body))
        self.assertEqual(self.payments(), before + 1)

    def test_mismatch_and_missing_key(self):
        create_payment(self.conn, "py-mismatch", BODY)
        status, _ = create_payment(self.conn, "py-mismatch", {"amount": 999, "currency": "EUR"})
        self.assertEqual(status, 422)
        self.assertEqual(create_payment(self.conn, None, BODY)[0], 400)

    def test_replay_of_a_null_response(self):
        # a claim in autocommit mode is completed at once, with a NULL response
        self.conn.execute("SELECT * FROM idem_claim(key => 'py-null')")
        self.assertEqual(create_payment(self.conn, "py-null", BODY), (204, None))

    def test_error_leaves_the_connection_usable(self):
        with self.assertRaises(psycopg.errors.CheckViolation):
            create_payment(self.conn, "py-error", {"amount": -1, "currency": "EUR"})
        self.assertEqual(self.conn.info.transaction_status, psycopg.pq.TransactionStatus.IDLE)
        self.assertEqual(self.conn.execute("SELECT 1").fetchone()[0], 1)
        # the claim rolled back with the failed write: a retry runs again
        rows = self.conn.execute("SELECT * FROM idem_lookup('py-error')").fetchall()
        self.assertEqual(rows, [])
        self.assertEqual(create_payment(self.conn, "py-error", BODY)[0], 201)

    def test_concurrent_retry_gets_409(self):
        first, retry, locker = connect(), connect(), connect()
        try:
            retry.execute("SET lock_timeout = '10s'")   # a retry that waits fails, not hangs
            # hold the first attempt between its claim and its INSERT
            locker.execute("BEGIN")
            locker.execute("LOCK TABLE payments IN EXCLUSIVE MODE")
            outcome = {}
            thread = threading.Thread(
                target=lambda: outcome.update(r=create_payment(first, "py-concurrent", BODY)))
            thread.start()
            pid = first.info.backend_pid
            for _ in range(500):
                waiting = self.conn.execute(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                    (pid,)).fetchone()[0]
                if waiting:
                    break
                time.sleep(0.01)
            self.assertTrue(waiting, "the first attempt never reached its INSERT")
            self.assertEqual(create_payment(retry, "py-concurrent", BODY)[0], 409)
            locker.execute("COMMIT")
            thread.join(10)
            self.assertEqual(outcome["r"][0], 201)
            # once the first attempt committed, the retry replays its response
            self.assertEqual(create_payment(retry, "py-concurrent", BODY), outcome["r"])
        finally:
            for c in (first, retry, locker):
                c.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
