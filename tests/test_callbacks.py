"""Button data: every family packs within Telegram's 64 bytes, round-trips, refuses what it did not write."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

import pytest

from bot.domain.callbacks import MAX_BYTES, BadCallback, Callback, Shape, _parts


@dataclasses.dataclass(frozen=True)
class Press(Callback, prefix="test-press"):
    report: int
    action: Literal["ack", "take"]
    token: Annotated[str, Shape(r"[0-9a-f]*")] = ""


def test_a_family_round_trips_in_the_old_wire_format() -> None:
    assert Press(12, "take").pack() == "test-press:12:take"
    assert Press(12, "take", "ab").pack() == "test-press:12:take:ab"
    assert Press.unpack("test-press:12:take") == Press(12, "take")
    assert Press.unpack("test-press:-5:ack:ff") == Press(-5, "ack", "ff")
    assert Press.matches("test-press:1:ack")


@pytest.mark.parametrize(
    "data",
    [
        "test-press:12",  # too few parts
        "test-press:12:take:ab:extra",  # too many
        "test-press:x:take",  # not a number
        "test-press:12:close",  # not a choice
        "test-press:12:take:XYZ",  # not its shape
        "t:12:take",  # another prefix
        "test-press:" + "1" * 70,  # over 64 bytes
        None,
        12,
    ],
)
def test_forged_or_stale_data_is_refused(data: object) -> None:
    with pytest.raises(BadCallback):
        Press.unpack(data)
    assert not Press.matches(data)


def test_packing_refuses_what_telegram_would() -> None:
    with pytest.raises(BadCallback):
        Press(12, "take", "a" * MAX_BYTES).pack()
    with pytest.raises(BadCallback):
        Press(12, "close").pack()  # type: ignore[arg-type]


def test_a_prefix_cannot_be_taken_twice() -> None:
    with pytest.raises(TypeError, match="taken"):

        @dataclasses.dataclass(frozen=True)
        class Again(Callback, prefix="test-press"):
            report: int


def test_every_family_round_trips_at_its_longest() -> None:
    # The longest value each part can hold in use: Telegram ids and row ids fit 19 characters with a sign;
    # free-text parts get the longest their family's own test gives (here, 8 hex digits).
    for family in Callback.families().values():
        longest: dict[str, object] = {}
        for part in _parts(family):
            if part.kind is int:
                longest[part.name] = -(10**17)
            elif isinstance(part.kind, tuple):
                longest[part.name] = max(part.kind, key=lambda c: len(c.encode()))
            elif part.default is dataclasses.MISSING:
                longest[part.name] = "f" * 8
        value = family(**longest)
        assert family.unpack(value.pack()) == value, family.__name__
