"""libpq connection strings for primary_conninfo and pg_rewind (`domain.connection`)."""

from __future__ import annotations

from wedsync_operator.domain.connection import Connection, conninfo, conninfo_target


def test_values_are_quoted_as_libpq_reads_them() -> None:
    conn = Connection("db.east.svc", 5432, "replicator", "postgres", password="it's\\secret")
    text = conninfo(conn, application_name="west")
    assert text == ("host='db.east.svc' port='5432' user='replicator' "
                    "password='it\\'s\\\\secret' application_name='west'")
    assert conninfo_target(text) == ("db.east.svc", "5432", "west")


def test_a_conninfo_as_postgresql_shows_it_is_read_back() -> None:
    shown = ("user=postgres passfile=/var/lib/postgresql/.pgpass channel_binding=prefer "
             "host=127.0.0.1 port=40123 sslmode=prefer application_name=west")
    assert conninfo_target(shown) == ("127.0.0.1", "40123", "west")
    assert conninfo_target("") == (None, None, None)
