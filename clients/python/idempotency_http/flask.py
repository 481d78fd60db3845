"""Flask adapter.

    idem = FlaskIdempotency(Pool("dbname=shop"))

    @app.post("/payments")
    @idem.idempotent
    def create_payment():
        idem.connection.execute("INSERT INTO payments ...")   # same transaction
        return {"id": 1}, 201
"""
import functools

from flask import Response as FlaskResponse
from flask import current_app, g, request
from werkzeug.exceptions import HTTPException

from .core import Idempotency, Request, Response


class FlaskIdempotency:
    def __init__(self, pool, **options):
        self.core = Idempotency(pool, **options)

    @property
    def connection(self):
        """The connection of this request's transaction (None when the
        request came without a key on a route where the key is optional)."""
        return g.get("idempotency_connection")

    def idempotent(self, view=None, **overrides):
        """Decorate a view; ``overrides`` change settings for this route only
        (e.g. ``required=False``)."""
        if view is None:
            return functools.partial(self.idempotent, **overrides)
        core = self.core.with_options(**overrides) if overrides else self.core

        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            body = request.get_data(cache=True)
            rule = request.url_rule.rule if request.url_rule is not None else request.path
            req = Request(request.method, request.path, rule, request.headers, body,
                          query=request.query_string.decode("latin-1"), native=request)

            def run(conn):
                g.idempotency_connection = conn
                try:
                    rv = view(*args, **kwargs)
                except HTTPException as e:  # abort(404): an answer, not a failure
                    rv = e.get_response()
                finally:
                    g.idempotency_connection = None
                resp = current_app.make_response(rv)
                resp.direct_passthrough = False
                return Response(resp.status_code, resp.headers.items(), resp.get_data(),
                                native=resp)

            out = core.handle(req, run)
            if out.native is not None:
                return out.native
            resp = FlaskResponse(out.body, status=out.status)
            resp.headers.remove("Content-Type")
            for k, v in out.headers:
                resp.headers.add(k, v)
            return resp

        return wrapper
