"""How many synchronous standbys a `synchronous_standby_names` asks for, in each of
PostgreSQL's forms, and when a primary's commits wait: pure."""

from __future__ import annotations

import pytest

from wedsync_operator.domain.synchronous import commits_wait, required_standbys


@pytest.mark.parametrize(("setting", "wanted"), [
    ("", 0), ("  ", 0),
    ("ANY 1 (east, west)", 1), ("any 2 (a, b, c)", 2),
    ("FIRST 2 (a, b, c)", 2), ("3 (a, b, c, d)", 3), ("2(a,b)", 2),
    ("east", 1), ("east, west", 1), ("*", 1), ('"east-1", west', 1),
])
def test_required_standbys_in_every_form(setting: str, wanted: int) -> None:
    assert required_standbys(setting) == wanted


def test_commits_wait_only_while_fewer_synchronous_standbys_stream_than_asked() -> None:
    assert commits_wait("", 0) is None
    assert commits_wait("ANY 1 (east, west)", 1) is None
    assert commits_wait("ANY 2 (a, b, c)", 3) is None
    why = commits_wait("ANY 2 (a, b, c)", 1)
    assert why is not None
    assert "asks for 2 synchronous standbys and 1" in why
