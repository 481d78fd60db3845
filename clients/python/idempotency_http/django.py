"""Django adapter (Django 3.2 or later).

    idem = DjangoIdempotency(Pool("dbname=shop"))

    @csrf_exempt
    @idem.idempotent
    def create_payment(request):
        request.idempotency_connection.execute("INSERT INTO payments ...")
        return JsonResponse({"id": 1}, status=201)

The handler's writes join the claim's transaction when they go through
``request.idempotency_connection`` (a psycopg 3 connection).  Writes through
Django's ORM use Django's own connection, which is another transaction.
"""
import functools

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, HttpResponseForbidden, HttpResponseNotFound

from .core import Idempotency, Request, Response


class DjangoIdempotency:
    def __init__(self, pool, **options):
        self.core = Idempotency(pool, **options)

    def idempotent(self, view=None, **overrides):
        if view is None:
            return functools.partial(self.idempotent, **overrides)
        core = self.core.with_options(**overrides) if overrides else self.core

        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            match = request.resolver_match
            route = "/" + match.route if match is not None and match.route else request.path
            req = Request(request.method, request.path, route, request.headers, request.body,
                          query=request.META.get("QUERY_STRING", ""), native=request)

            def run(conn):
                request.idempotency_connection = conn
                try:
                    resp = view(request, *args, **kwargs)
                except Http404:
                    resp = HttpResponseNotFound()
                except PermissionDenied:
                    resp = HttpResponseForbidden()
                finally:
                    request.idempotency_connection = None
                if resp.streaming:
                    content = b"".join(resp.streaming_content)
                    resp = HttpResponse(content, status=resp.status_code,
                                        content_type=resp.get("Content-Type"))
                return Response(resp.status_code, resp.items(), resp.content, native=resp)

            out = core.handle(req, run)
            if out.native is not None:
                return out.native
            resp = HttpResponse(out.body, status=out.status)
            del resp["Content-Type"]
            for k, v in out.headers:
                resp[k] = v
            return resp

        return wrapper
