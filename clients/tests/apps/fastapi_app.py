import asyncio

from fastapi import APIRouter, Depends, FastAPI, Request, Response

from common import DSN, INSERT, Boom, parse, result
from idempotency_http import AsyncPool
from idempotency_http.fastapi import FastAPIIdempotency

pool = AsyncPool(DSN, max_size=20)
idem = FastAPIIdempotency(pool)
router = APIRouter(route_class=idem.route_class)
app = FastAPI()


async def create(request, conn):
    doc, status, sleep, fail = parse(await request.body(), request.headers)
    if status:
        return Response(status_code=int(status))
    cur = await conn.execute(INSERT, (doc["ref"], doc.get("amount", 0)))
    payment_id = (await cur.fetchone())[0]
    if sleep:
        await asyncio.sleep(sleep)
    if fail:
        raise Boom("the handler failed")
    status, headers, body = result(doc, payment_id)
    return Response(body, status_code=status, headers=dict(headers))


@router.post("/payments")
async def payments(request: Request, conn=Depends(idem.connection)):
    return await create(request, conn)


@app.post("/plain")
async def plain(request: Request):
    conn = await pool.getconn()
    try:
        resp = await create(request, conn)
        await conn.commit()
        return resp
    finally:
        await conn.rollback()
        await pool.putconn(conn)


app.include_router(router)
