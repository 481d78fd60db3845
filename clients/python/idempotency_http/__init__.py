"""Idempotency-Key middleware on PostgreSQL's idempotency extension.

The framework adapters live in ``idempotency_http.flask``,
``idempotency_http.django`` and ``idempotency_http.fastapi``.
"""
from .core import (DEFAULT_REPLAY_HEADERS, AsyncIdempotency, Idempotency,
                   InvalidKey, Request, Response, default_fingerprint,
                   default_scope, default_store, parse_key)
from .pool import AsyncPool, Pool

__all__ = [
    "AsyncIdempotency", "AsyncPool", "DEFAULT_REPLAY_HEADERS", "Idempotency",
    "InvalidKey", "Pool", "Request", "Response", "default_fingerprint",
    "default_scope", "default_store", "parse_key",
]
