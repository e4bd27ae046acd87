"""The safety word's rules and what counts as a Telegram bot username."""

from __future__ import annotations

import pytest

from bot.domain.identity import (
    SAFEWORD_MAX,
    BadSafeword,
    BadUsername,
    bot_username,
    normalise_safeword,
    official_usernames,
)


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("blue river", "blue river"),
        ("  blue \t  river  ", "blue river"),
        ("cafe\u0301", "café"),  # decomposed, stored composed
        ("көк дарыя", "көк дарыя"),
        ("koʻk daryo", "koʻk daryo"),
        ("🌻 sunflower", "🌻 sunflower"),
        ("👩\u200d⚕️ doctor", "👩\u200d⚕️ doctor"),
        ("<b>bold</b>", "<b>bold</b>"),  # kept as typed; escaped wherever it is shown
        ("w" * SAFEWORD_MAX, "w" * SAFEWORD_MAX),
    ],
)
def test_a_safety_word_is_normalised(typed: str, stored: str) -> None:
    assert normalise_safeword(typed) == stored


@pytest.mark.parametrize(
    ("typed", "key"),
    [
        ("", "safeword.too_short"),
        ("   ", "safeword.too_short"),
        ("a", "safeword.too_short"),
        ("w" * (SAFEWORD_MAX + 1), "safeword.too_long"),
        ("🌻" * 17, "safeword.too_long"),  # as Telegram counts: 34
        ("two\nlines", "safeword.one_line"),
        ("right\u202eto left", "safeword.one_line"),  # a direction override would fake what is shown
        ("zero\u200bwidth", "safeword.one_line"),
        ("bell\x07", "safeword.one_line"),
        ("K-ABCDE", "safeword.one_line"),  # read as a question's code
        ("see R-7K3QX", "safeword.one_line"),
    ],
)
def test_odd_safety_words_are_refused_with_a_reason(typed: str, key: str) -> None:
    with pytest.raises(BadSafeword) as refused:
        normalise_safeword(typed)
    assert refused.value.key == key


@pytest.mark.parametrize(
    ("asked", "name"),
    [
        ("@Jarchy_Bot", "jarchy_bot"),
        ("jarchy_bot", "jarchy_bot"),
        (" @jarchy_bot ", "jarchy_bot"),
        ("https://t.me/Jarchy_Bot", "jarchy_bot"),
        ("t.me/jarchy_bot?start=x", "jarchy_bot"),
    ],
)
def test_usernames_are_read_with_or_without_at_in_any_case(asked: str, name: str) -> None:
    assert bot_username(asked) == name


@pytest.mark.parametrize(
    "asked", ["", "@", "@abcd", "@" + "a" * 33, "1jarchy_bot", "jarchy-bot", "@@x", "жархи_бот"]
)
def test_garbage_is_no_username(asked: str) -> None:
    with pytest.raises(BadUsername):
        bot_username(asked)


def test_the_official_list_starts_with_the_running_bot_and_has_no_repeats() -> None:
    assert official_usernames("Jarchy_Bot", ["@backup_bot", "JARCHY_BOT", "bad name"]) == (
        "jarchy_bot",
        "backup_bot",
    )
    assert official_usernames(None, []) == ()
