"""Checking text written in Telegram's HTML subset before it is saved and sent to thousands of people.

Telegram rejects a whole message for one unclosed tag or unknown entity; a broadcast must fail here, in
front of its author, not 100,000 times in the outbox.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from html.parser import HTMLParser

from bot.domain.errors import BadInput

# https://core.telegram.org/bots/api#html-style
_ALLOWED: dict[str, frozenset[str]] = {
    "b": frozenset(), "strong": frozenset(), "i": frozenset(), "em": frozenset(), "u": frozenset(),
    "ins": frozenset(), "s": frozenset(), "strike": frozenset(), "del": frozenset(),
    "span": frozenset({"class"}), "tg-spoiler": frozenset(), "a": frozenset({"href"}),
    "code": frozenset({"class"}), "pre": frozenset(), "blockquote": frozenset({"expandable"}),
    "tg-emoji": frozenset({"emoji-id"}),
}  # fmt: skip
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024


class HtmlProblem(BadInput, ValueError):
    """Why the text would be refused; `key` names the explanation, `detail` the offending part."""

    def __init__(self, key: str, detail: str = "") -> None:
        super().__init__(key, detail=detail)
        self.detail = detail


@dataclass
class _Checker(HTMLParser):
    stack: list[str] = field(default_factory=list)
    visible: list[str] = field(default_factory=list)
    problem: HtmlProblem | None = None

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=False)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _ALLOWED:
            self._fail("html.tag_unknown", f"<{tag}>")
            return
        for name, value in attrs:
            if name not in _ALLOWED[tag]:
                self._fail("html.attribute_unknown", f"<{tag} {name}>")
            if (
                tag == "a"
                and name == "href"
                and not (value or "").startswith(("http://", "https://", "tg://"))
            ):
                self._fail("html.link_invalid", value or "")
            if tag == "span" and name == "class" and value != "tg-spoiler":
                self._fail("html.attribute_unknown", f'<span class="{value}">')
        self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._fail("html.tag_unknown", f"<{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self._fail("html.tag_unbalanced", f"</{tag}>")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if "<" in data or ">" in data:
            self._fail("html.stray_bracket", data.strip()[:20])
        self.visible.append(data)

    def handle_entityref(self, name: str) -> None:
        if name not in ("lt", "gt", "amp", "quot"):
            self._fail("html.entity_unknown", f"&{name};")
        self.visible.append(html.unescape(f"&{name};"))

    def handle_charref(self, name: str) -> None:
        self.visible.append(html.unescape(f"&#{name};"))

    def handle_comment(self, data: str) -> None:
        self._fail("html.tag_unknown", "<!-- -->")

    def handle_decl(self, decl: str) -> None:
        self._fail("html.tag_unknown", f"<!{decl[:10]}>")

    def _fail(self, key: str, detail: str) -> None:
        if self.problem is None:
            self.problem = HtmlProblem(key, detail)


def check_html(text: str, *, limit: int = TEXT_LIMIT) -> int:
    """Return the text's visible length in UTF-16 units as Telegram counts it; raise HtmlProblem if
    Telegram would refuse it (unknown or unbalanced tags, a bad entity, or too long)."""
    if not text.strip():
        raise HtmlProblem("html.empty")
    checker = _Checker()
    checker.feed(text)
    checker.close()
    if checker.problem is None and checker.stack:
        checker.problem = HtmlProblem("html.tag_unclosed", f"<{checker.stack[-1]}>")
    if checker.problem is None and checker.rawdata:
        # Whatever the parser could not consume (a lone "<" at the end) would break Telegram's parser too.
        checker.problem = HtmlProblem("html.stray_bracket", checker.rawdata[:20])
    if checker.problem is not None:
        raise checker.problem
    length = len("".join(checker.visible).encode("utf-16-le")) // 2
    if length > limit:
        raise HtmlProblem("html.too_long", str(limit))
    return length
