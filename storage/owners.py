"""How short-lived rows (drafts, staged evidence) name their owner without naming them."""

from __future__ import annotations

from typing import Protocol


class Owners(Protocol):
    """How a row names its owner: keyed tags (bot.security.owner_tags), or the pseudonym itself."""

    def tags(self, pseudonym: str) -> list[str]:
        """Every value the owner column may hold for this person, the one to write first."""
        ...

    def seal(self, pseudonym: str, *, binding: str) -> bytes | None:
        """The owner sealed beside the tag (None: the column holds the pseudonym itself)."""
        ...

    def open(self, sealed: bytes | None, fallback: str, *, binding: str) -> str:
        """The owner of a row, from its seal or (no seal) the column."""
        ...


class ClearOwners:
    """Rows named by the pseudonym (tests and tools without transient keys)."""

    def tags(self, pseudonym: str) -> list[str]:
        """Only the pseudonym."""
        return [pseudonym]

    def seal(self, pseudonym: str, *, binding: str) -> bytes | None:
        """Nothing to seal."""
        return None

    def open(self, sealed: bytes | None, fallback: str, *, binding: str) -> str:
        """The column is the owner."""
        return fallback
