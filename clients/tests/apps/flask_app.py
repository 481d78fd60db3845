import time

from flask import Flask, request

from common import DSN, INSERT, Boom, parse, result
from idempotency_http import Pool
from idempotency_http.flask import FlaskIdempotency

app = Flask(__name__)
pool = Pool(DSN, max_size=20)
idem = FlaskIdempotency(pool)


def create(conn):
    doc, status, sleep, fail = parse(request.get_data(), request.headers)
    if status:
        return "", int(status)
    payment_id = conn.execute(INSERT, (doc["ref"], doc.get("amount", 0))).fetchone()[0]
    if sleep:
        time.sleep(sleep)
    if fail:
        raise Boom("the handler failed")
    status, headers, body = result(doc, payment_id)
    return body, status, headers


@app.post("/payments")
@idem.idempotent
def payments():
    return create(idem.connection)


@app.post("/plain")
def plain():
    conn = pool.getconn()
    try:
        rv = create(conn)
        conn.commit()
        return rv
    finally:
        conn.rollback()
        pool.putconn(conn)
