"""Every key exists in every language with the same placeholders, and none is an English copy."""

from __future__ import annotations

import html.parser
import re

import pytest

from messages import LANGUAGES, catalogs
from messages.catalog import MissingText, placeholders

ENGLISH = catalogs().keys("en")
# Texts that are the same in every language (a dash, an international signal, a bare "label: value").
LANGUAGE_NEUTRAL = frozenset(
    {"report.none", "category.sos", "digest.line", "cmd.field_error", "flow.summary_line"}
)


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_key_is_translated_with_the_same_placeholders(language: str) -> None:
    texts = catalogs().keys(language)
    assert set(texts) == set(ENGLISH), (
        f"{language}: missing {set(ENGLISH) - set(texts)}, extra {set(texts) - set(ENGLISH)}"
    )
    for key, english in ENGLISH.items():
        assert texts[key].strip(), f"{language}:{key} is empty"
        assert placeholders(texts[key]) == placeholders(english), f"{language}:{key} placeholders differ"


@pytest.mark.parametrize("language", [lang for lang in LANGUAGES if lang != "en"])
def test_translations_are_not_english_copies(language: str) -> None:
    texts = catalogs().keys(language)
    copies = [
        key for key, english in ENGLISH.items() if texts[key] == english and key not in LANGUAGE_NEUTRAL
    ]
    assert not copies, f"{language} copies English for {copies}"


class _TagBalance(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"


@pytest.mark.parametrize("language", LANGUAGES)
def test_texts_are_well_formed_telegram_html(language: str) -> None:
    for key, value in catalogs().keys(language).items():
        parser = _TagBalance()
        parser.feed(value)
        assert not parser.stack, f"{language}:{key} leaves <{parser.stack}> open"
        assert set(_tags(value)) <= {"b", "i", "u", "s", "code", "pre", "a", "blockquote"}, key


# Uzbek Latin writes oʻ and gʻ with U+02BB MODIFIER LETTER TURNED COMMA and the tutuq belgisi (maʼlumot)
# with U+02BC MODIFIER LETTER APOSTROPHE: both are letters, so words stay whole for search, sorting and line
# breaks, where a quotation mark (U+2019, U+2018) or an ASCII apostrophe splits them.
_UZ_WRONG_SIGN = re.compile(r"(?<=[^\W\d_])['`\u2018\u2019](?=[^\W\d_])")
_UZ_TURNED_NOT_AFTER_O_G = re.compile(r"(?<![oOgG])\u02bb")
_UZ_APOSTROPHE_AFTER_O_G = re.compile(r"(?<=[oOgG])\u02bc")


def test_uzbek_uses_the_modifier_letters_for_o_g_and_the_tutuq_belgisi() -> None:
    problems = []
    for key, value in catalogs().keys("uz").items():
        for pattern, why in (
            (_UZ_WRONG_SIGN, "a quotation mark or ASCII apostrophe between letters (use U+02BB or U+02BC)"),
            (_UZ_TURNED_NOT_AFTER_O_G, "U+02BB only follows o or g"),
            (_UZ_APOSTROPHE_AFTER_O_G, "oʻ/gʻ take U+02BB, not the tutuq belgisi U+02BC"),
        ):
            for match in pattern.finditer(value):
                start = max(match.start() - 12, 0)
                problems.append(f"{key}: {why}: …{value[start : match.end() + 12]}…")
    assert not problems, "\n".join(problems)


def test_placeholders_are_escaped_unless_safe() -> None:
    rendered = catalogs().text("en", "help.text", commands="<script>")
    assert "&lt;script&gt;" in rendered and "<script>" not in rendered


def test_unknown_key_is_an_error_not_a_silent_key() -> None:
    with pytest.raises(MissingText):
        catalogs().text("ru", "no.such.key")


@pytest.mark.parametrize(
    ("code", "expected"), [("ru-RU", "ru"), ("uz", "uz"), ("ky", "ky"), ("kk", "en"), (None, "en")]
)
def test_telegram_language_codes_map_to_catalogs(code: str | None, expected: str) -> None:
    assert catalogs().language(code) == expected


def _tags(value: str) -> list[str]:
    collected: list[str] = []

    class Collector(html.parser.HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            collected.append(tag)

    Collector().feed(value)
    return collected
