"""A request handler that creates a payment at most once per idempotency key.

psycopg 3 (Debian: python3-psycopg).  The connection is in autocommit mode;
the handler opens its own transaction.  The tables are in ../schema.sql.
"""
import json


def create_payment(conn, idem_key, body):
    if not idem_key:
        return 400, {"error": "Idempotency-Key header required"}
    with conn.transaction():                      # one transaction: claim, write, complete
        outcome, response = conn.execute(
            "SELECT outcome::text, response"
            "  FROM idem_claim(key => %s, fingerprint => idem_fingerprint(%s::jsonb),"
            "                  wait => false)",
            (idem_key, json.dumps(body))).fetchone()
        if outcome == "replay":
            if response is None:                  # done before, and no response was kept
                return 204, None
            return response["status"], response["body"]
        if outcome == "in_progress":
            return 409, {"error": "a request with this key is in progress"}
        if outcome == "mismatch":
            return 422, {"error": "this key was used with a different request"}
        payment_id = conn.execute(
            "INSERT INTO payments (amount, currency) VALUES (%s, %s) RETURNING id",
            (body["amount"], body["currency"])).fetchone()[0]
        result = {"status": 201, "body": {"id": payment_id}}
        conn.execute("SELECT idem_complete(key => %s, response => %s::jsonb)",
                     (idem_key, json.dumps(result)))
    return result["status"], result["body"]
