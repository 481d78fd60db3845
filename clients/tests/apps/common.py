"""What the Python test apps share: one handler, written once, that the
Flask, Django and FastAPI apps call.

POST /payments (idempotent) and POST /plain (the same, without the
middleware) take a JSON body {"ref": str, "amount": int, "bin": hex?} and
insert one row into payments.  Request headers steer the tests:
X-Status: answer that status before writing anything; X-Sleep: seconds to
sleep after the write; X-Fail: raise after the write.
"""
import json
import os

DSN = os.environ.get("DATABASE_URL", "")


class Boom(Exception):
    pass


def parse(body, headers):
    doc = json.loads(body or b"{}")
    return (doc, headers.get("X-Status"), float(headers.get("X-Sleep") or 0),
            headers.get("X-Fail") == "1")


INSERT = "INSERT INTO payments (ref, amount) VALUES (%s, %s) RETURNING id"


def result(doc, payment_id):
    """(status, headers, body) of a created payment."""
    headers = [("Location", "/payments/%d" % payment_id), ("X-Secret", "not replayed")]
    if doc.get("bin") is not None:
        return 201, headers + [("Content-Type", "application/octet-stream")], \
            bytes.fromhex(doc["bin"])
    return 201, headers + [("Content-Type", "application/json")], \
        json.dumps({"id": payment_id, "ref": doc["ref"]}).encode()
