"""Small connection pools for psycopg 3, safe behind a transaction pooler.

Connections are opened with ``prepare_threshold=None``: psycopg never
prepares statements on the server, so a transaction-pooling PgBouncer may
hand each transaction to another server connection.  A connection that comes
back still inside a transaction is closed instead of reused; one that comes
back broken takes the idle ones with it (a server restart, a pooler restart
or a terminated backend usually cuts them all).
``psycopg_pool`` works too (pass ``kwargs={"prepare_threshold": None}``).
"""
import asyncio
import threading

import psycopg
from psycopg.pq import TransactionStatus


class Pool:
    """A thread-safe pool of at most ``max_size`` connections."""

    def __init__(self, conninfo="", max_size=10, timeout=30.0, **kwargs):
        self.conninfo = conninfo
        self.kwargs = dict(kwargs, autocommit=False, prepare_threshold=None)
        self.timeout = timeout
        self._idle = []
        self._slots = threading.BoundedSemaphore(max_size)
        self._lock = threading.Lock()

    def getconn(self):
        if not self._slots.acquire(timeout=self.timeout):
            raise TimeoutError("no free connection in the pool")
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = psycopg.connect(self.conninfo, **self.kwargs)
            return conn
        except BaseException:
            self._slots.release()
            raise

    def putconn(self, conn):
        try:
            if conn.broken:
                self.close()
            if conn.closed or conn.broken:
                return
            if conn.info.transaction_status != TransactionStatus.IDLE:
                conn.close()
                return
            with self._lock:
                self._idle.append(conn)
        finally:
            self._slots.release()

    def close(self):
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class AsyncPool:
    """The same for asyncio, with psycopg.AsyncConnection."""

    def __init__(self, conninfo="", max_size=10, timeout=30.0, **kwargs):
        self.conninfo = conninfo
        self.kwargs = dict(kwargs, autocommit=False, prepare_threshold=None)
        self.timeout = timeout
        self.max_size = max_size
        self._idle = []
        self._slots = None  # created in the running loop

    async def getconn(self):
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_size)
        await asyncio.wait_for(self._slots.acquire(), self.timeout)
        try:
            if self._idle:
                return self._idle.pop()
            return await psycopg.AsyncConnection.connect(self.conninfo, **self.kwargs)
        except BaseException:
            self._slots.release()
            raise

    async def putconn(self, conn):
        try:
            if conn.broken:
                await self.close()
            if conn.closed or conn.broken:
                return
            if conn.info.transaction_status != TransactionStatus.IDLE:
                await conn.close()
                return
            self._idle.append(conn)
        finally:
            self._slots.release()

    async def close(self):
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
