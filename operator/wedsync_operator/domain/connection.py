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
