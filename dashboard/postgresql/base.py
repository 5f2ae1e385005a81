"""Django's PostgreSQL backend with a cheaper health check.

With ``CONN_HEALTH_CHECKS`` (set for every ``DATABASE_URL``), Django asks whether a kept
connection is usable before the first query of each request and each task, and its answer is a
``SELECT 1``: a round trip on the path of every page and of every change on its way to "In
sync" (0.1 ms on a quiet machine, 0.4 ms on a busy one). A connection the server ended (a
restart, ``pg_terminate_backend``, an idle timeout) has something waiting on its socket: the
server's last word, or the end of the stream. So a socket with nothing to read is answered
from here, and only one with something waiting is asked with ``SELECT 1``, as before.

A peer that vanished without a word (a lost host) is found by neither: the query after a
``SELECT 1`` would hang as long as the ``SELECT 1`` itself, until TCP gives up.
"""

from __future__ import annotations

import select

import psycopg
from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed or connection.broken:
            return False
        # Idle between statements, with nothing waiting: the server has said nothing since.
        # Anything else (a statement's reply unread, a transaction in error, data waiting)
        # is asked as Django asks it.
        if connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            try:
                poller = select.poll()  # not select(): a descriptor may be past 1024
                poller.register(connection.fileno(), select.POLLIN)
                if not poller.poll(0):
                    return True
            except (OSError, ValueError, psycopg.Error):
                pass
        return bool(super().is_usable())
