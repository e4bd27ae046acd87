"""Who a short-lived row belongs to, under the transient keys: a tag, never the pseudonym itself.

A draft or a staged file must be found by its owner, so its row names them. Named by the pseudonym, the old
copies of that row in the WAL would show, without any key, that this person's draft vanished in the very
commit that created an anonymous report. Named by a keyed tag of the pseudonym under the current epoch key
(bot.security.transient), the row says nothing once that key is overwritten: each scrub re-tags the live
rows under the new epoch, and what the disk keeps of older rows no longer points at anyone.
"""

from __future__ import annotations

import nacl.hash
from nacl.encoding import RawEncoder

from bot.security.crypto import Cipher
from bot.security.transient import TransientKeys

_PERSON = b"jarchy-owner-v1"
_KNOWN_AT_MOST = 8192


class OwnerTags:
    """Tags for a pseudonym under every live epoch, and the owner sealed beside them."""

    def __init__(self, cipher: Cipher) -> None:
        self._cipher = cipher
        # A draft's step asks for its owner's tags several times; each is a keyed hash. The copies are
        # kept by key and dropped with it: a tag of a retired key beside its pseudonym in memory would
        # tie the WAL's old rows to a person after the key itself is gone.
        self._known: dict[bytes, dict[str, str]] = {}
        self._count = 0

    def current(self, pseudonym: str) -> str:
        """The tag a row of this person is written under now."""
        keys = self._cipher.transient_keys
        if keys is None:
            return pseudonym
        # Only the current key's: a scrub re-tags every row it rewrites, and late in a busy day dozens of
        # retired keys are still live (profiled: the tags of all of them were most of the bot's CPU).
        live = self._live(keys)
        return self._tag(live[0], pseudonym)

    def tags(self, pseudonym: str) -> list[str]:
        """Every tag this person's rows may carry: the current first, the clear pseudonym last (rows
        written before tags, until a scrub re-tags them)."""
        keys = self._cipher.transient_keys
        if keys is None:
            return [pseudonym]
        live = self._live(keys)
        return [self._tag(key, pseudonym) for key in live] + [pseudonym]

    def _live(self, keys: TransientKeys) -> list[bytes]:
        live = keys.tag_keys()
        if len(self._known) > len(live) or any(key not in live for key in self._known):
            self._known = {key: known for key, known in self._known.items() if key in live}
            self._count = sum(len(known) for known in self._known.values())
        return live

    def _tag(self, key: bytes, pseudonym: str) -> str:
        known = self._known.setdefault(key, {})
        tag = known.get(pseudonym)
        if tag is None:
            # Bounded in all: keys retired within TAG_GRACE_S count too (one per scrub, dozens under
            # load), so a bound per key would grow with them.
            self._count += 1
            if self._count > _KNOWN_AT_MOST:
                self._known = {}
                self._count = 1
                known = self._known.setdefault(key, {})
            tag = known[pseudonym] = _tag(key, pseudonym)
        return tag

    def seal(self, pseudonym: str, *, binding: str) -> bytes:
        """Seal the owner beside the tag, so a scrub can compute their next tag."""
        return self._cipher.encrypt_text(pseudonym, binding=binding, transient=True)

    def open(self, sealed: bytes | None, fallback: str, *, binding: str) -> str:
        """Return the owner of a row: sealed, or (a row from before tags) the clear value it holds."""
        if sealed is None:
            return fallback
        return self._cipher.decrypt_text(sealed, binding=binding)


def _tag(key: bytes, pseudonym: str) -> str:
    digest: bytes = nacl.hash.blake2b(
        pseudonym.encode(), digest_size=16, key=key, person=_PERSON, encoder=RawEncoder
    )
    return digest.hex()
