"""FastAPI adapter (FastAPI 0.92 or later, async endpoints).

    idem = FastAPIIdempotency(AsyncPool("dbname=shop"))
    router = APIRouter(route_class=idem.route_class)

    @router.post("/payments", status_code=201)
    async def create_payment(conn=Depends(idem.connection)):
        await conn.execute("INSERT INTO payments ...")   # same transaction
        return {"id": 1}

Every route of that router is idempotent; give ``route_class`` only to the
routers that need it.
"""
from fastapi import Request as FastAPIRequest
from fastapi import Response as FastAPIResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from .core import AsyncIdempotency, Request, Response


class FastAPIIdempotency:
    def __init__(self, pool, **options):
        self.core = core = AsyncIdempotency(pool, **options)

        class IdempotentRoute(APIRoute):
            def get_route_handler(self):
                original = super().get_route_handler()
                route = self.path

                async def handler(request):
                    return await _handle(core, route, original, request)

                return handler

        self.route_class = IdempotentRoute

    @staticmethod
    async def connection(request: FastAPIRequest):
        """A dependency: the connection of this request's transaction."""
        return getattr(request.state, "idempotency_connection", None)


async def _handle(core, route, original, request):
    body = await request.body()  # kept on the request: the endpoint reads it again
    req = Request(request.method, request.url.path, route, request.headers, body,
                  query=request.url.query, native=request)

    async def run(conn):
        request.state.idempotency_connection = conn
        try:
            resp = await original(request)
        except HTTPException as e:  # an answer, not a failure
            from fastapi.exception_handlers import http_exception_handler
            resp = await http_exception_handler(request, e)
        finally:
            request.state.idempotency_connection = None
        if not hasattr(resp, "body"):  # a streaming response: buffer it
            chunks = [c if isinstance(c, bytes) else c.encode(resp.charset)
                      async for c in resp.body_iterator]
            resp = FastAPIResponse(b"".join(chunks), status_code=resp.status_code,
                                   headers={k: v for k, v in resp.headers.items()
                                            if k != "content-length"})
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers]
        return Response(resp.status_code, headers, resp.body, native=resp)

    out = await core.handle(req, run)
    if out.native is not None:
        return out.native
    return FastAPIResponse(out.body, status_code=out.status, headers=dict(out.headers))
