"""Where a region's database listens, as read from its connection Secret."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Connection:
    """Where a region's database listens; the password is kept out of repr()."""

    host: str
    port: int
    user: str
    dbname: str
    password: str = field(default="", repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def scrub(self, text: str) -> str:
        return text.replace(self.password, "***") if self.password else text


def _quote(value: str) -> str:
    """A libpq connection-string value: single-quoted, backslash and quote escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def conninfo(conn: Connection, *, application_name: str | None = None,
             dbname: str | None = None) -> str:
    """A libpq connection string for `conn` (what a standby's primary_conninfo or pg_rewind's
    source server takes). The password, when there is one, is part of it: never log it."""
    parts = [("host", conn.host), ("port", str(conn.port)), ("user", conn.user)]
    if conn.password:
        parts.append(("password", conn.password))
    if dbname is not None:
        parts.append(("dbname", dbname))
    if application_name is not None:
        parts.append(("application_name", application_name))
    return " ".join(f"{key}={_quote(value)}" for key, value in parts)


def conninfo_target(text: str) -> tuple[str | None, str | None, str | None]:
    """(host, port, application_name) of a libpq connection string as PostgreSQL shows it
    (`SHOW primary_conninfo`), for comparing where a standby streams from."""
    values: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        key_start = i
        while i < n and text[i] not in "= \t":
            i += 1
        key = text[key_start:i]
        while i < n and text[i].isspace():
            i += 1
        if i >= n or text[i] != "=":
            break
        i += 1
        while i < n and text[i].isspace():
            i += 1
        value = []
        if i < n and text[i] == "'":
            i += 1
            while i < n and text[i] != "'":
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
            i += 1
        else:
            while i < n and not text[i].isspace():
                value.append(text[i])
                i += 1
        values[key] = "".join(value)
    return values.get("host"), values.get("port"), values.get("application_name")
