import time

from django.conf import settings

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    DATABASES={},
    SECRET_KEY="test only",
)

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402
from django.views.decorators.http import require_POST  # noqa: E402

from common import DSN, INSERT, Boom, parse, result  # noqa: E402
from idempotency_http import Pool  # noqa: E402
from idempotency_http.django import DjangoIdempotency  # noqa: E402

pool = Pool(DSN, max_size=20)
idem = DjangoIdempotency(pool)


def create(request, conn):
    doc, status, sleep, fail = parse(request.body, request.headers)
    if status:
        return HttpResponse(status=int(status))
    payment_id = conn.execute(INSERT, (doc["ref"], doc.get("amount", 0))).fetchone()[0]
    if sleep:
        time.sleep(sleep)
    if fail:
        raise Boom("the handler failed")
    status, headers, body = result(doc, payment_id)
    resp = HttpResponse(body, status=status)
    for k, v in headers:
        resp[k] = v
    return resp


@csrf_exempt
@require_POST
@idem.idempotent
def payments(request):
    return create(request, request.idempotency_connection)


@csrf_exempt
@require_POST
def plain(request):
    conn = pool.getconn()
    try:
        resp = create(request, conn)
        conn.commit()
        return resp
    finally:
        conn.rollback()
        pool.putconn(conn)


urlpatterns = [path("payments", payments), path("plain", plain)]
application = get_wsgi_application()
