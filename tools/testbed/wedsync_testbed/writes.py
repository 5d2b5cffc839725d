"""Writes an application makes, and the account of them: for the failover tests and benchmark.

The servers hold a table `writes (id bigint PRIMARY KEY)`. A `Writer` inserts numbered rows
(1, 2, 3, ...) into whichever of its targets accepts them and remembers every insert whose
commit was acknowledged; `missing` says which of those a server does not hold. Rows with an id
of 0 or below are probes (a check that a server takes writes), never counted.

A target is a `PostgresInstance` on loopback, or an `Endpoint`: a server reached over the
network with a password (a Service's ClusterIP or a Pod's IP on a test bed node).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from wedsync_testbed.postgres import SUPERUSER, PostgresInstance


@dataclass(frozen=True)
class Endpoint:
    """A server reached over the network, with a password."""

    host: str
    port: int
    user: str
    password: str
    dbname: str


Target = PostgresInstance | Endpoint


def connect(pg: Target) -> psycopg.Connection[Any]:
    """A session on the server, autocommit: every statement is acknowledged on its own (with
    the server's `synchronous_commit`). A `PostgresInstance`: superuser on its loopback port.
    An `Endpoint`: over the network, with TCP keepalives and a user timeout, so that a
    server that hangs or whose Pod vanished fails the session within seconds instead of
    leaving a statement waiting for the kernel's retransmissions."""
    if isinstance(pg, Endpoint):
        return psycopg.connect(host=pg.host, port=pg.port, user=pg.user,
                               password=pg.password, dbname=pg.dbname, autocommit=True,
                               connect_timeout=3, keepalives=1, keepalives_idle=1,
                               keepalives_interval=1, keepalives_count=3,
                               tcp_user_timeout=5000)
    return psycopg.connect(host="127.0.0.1", port=pg.port, user=SUPERUSER,
                           dbname="postgres", autocommit=True, connect_timeout=3)


@dataclass
class Writer:
    """Writes numbered rows into whichever server accepts them, all the time (trying the
    targets in turn); remembers every write that was acknowledged (committed)."""

    targets: tuple[Target, ...]
    acked: list[int] = field(default_factory=list)
    failed: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        n, current = 0, 0
        db: psycopg.Connection[Any] | None = None
        while not self.stop.is_set():
            n += 1
            try:
                if db is None:
                    db = connect(self.targets[current])
                db.execute("INSERT INTO writes VALUES (%s)", (n,))
                self.acked.append(n)
            except psycopg.Error:
                self.failed += 1
                if db is not None:
                    db.close()
                    db = None
                current = (current + 1) % len(self.targets)
                time.sleep(0.02)
        if db is not None:
            db.close()

    def finish(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(30)


def missing(pg: Target, ids: list[int]) -> list[int]:
    """Which of `ids` the server's `writes` does not hold."""
    with connect(pg) as db:
        present = {row[0] for row in db.execute("SELECT id FROM writes WHERE id > 0")}
    return [i for i in ids if i not in present]
