"""Check texts, captions and inline keyboards as Telegram does, parsing parse_mode=HTML the way it does."""

from __future__ import annotations

import re
from typing import Final

from .wire import ApiError, JSONDict, bad

# Telegram's limits, counted in characters (code points) of the text left after entity parsing and trimming:
# td's process_input_message_text compares utf8_length() of that text with message_text_length_max.
_MAX_TEXT: Final = 4096
_MAX_CAPTION: Final = 1024
_MAX_CALLBACK_DATA: Final = 64  # bytes of UTF-8
_MAX_BUTTONS: Final = 100
# The tags td's parse_html accepts (td/telegram/MessageEntity.cpp); any other is "Unsupported start tag".
_HTML_TAGS: Final = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "s",
        "strike",
        "del",
        "u",
        "ins",
        "tg-spoiler",
        "tg-emoji",
        "span",
        "pre",
        "code",
        "blockquote",
    }
)
# td's is_space; a NUL also ends td's C string, which is why reading past the end yields 0 below.
_SPACES: Final = frozenset(b" \t\r\n\v\f\0")
_NAMED_ENTITIES: Final = {b"lt": "<", b"gt": ">", b"amp": "&", b"quot": '"'}
_INTEGER_RE: Final = re.compile(r"-?[0-9]+")


def checked_text(p: JSONDict) -> str:
    """Return the text parameter as sent, refusing it like Telegram if it is malformed, empty or too long."""
    raw = p.get("text")
    text = "" if raw is None else str(raw)
    visible = visible_text(text, p.get("parse_mode")).strip()
    if not visible:
        raise bad("message text is empty")
    if len(visible) > _MAX_TEXT:
        raise bad("message is too long")
    return text


def checked_caption(p: JSONDict) -> str | None:
    """Return the caption parameter as sent, refusing it like Telegram when it is malformed or too long."""
    raw = p.get("caption")
    if raw is None:
        return None
    caption = str(raw)
    if len(visible_text(caption, p.get("parse_mode")).strip()) > _MAX_CAPTION:
        raise bad("message caption is too long")
    return caption


def visible_text(text: str, parse_mode: object) -> str:
    """Return what a reader sees of `text`: HTML is parsed, other modes are taken as they are."""
    if isinstance(parse_mode, str) and parse_mode.lower() == "html":
        return parse_html(text)
    return text


def inline_markup(p: JSONDict) -> JSONDict | None:
    """Return the inline keyboard to attach; other keyboards never show up on the Message."""
    markup = p.get("reply_markup")
    if markup is None or markup == "":
        return None
    if not isinstance(markup, dict):
        raise bad("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" not in markup:
        return None
    keyboard = markup["inline_keyboard"]
    if isinstance(keyboard, list):
        rows = [row for row in keyboard if isinstance(row, list)]
        if sum(map(len, rows)) > _MAX_BUTTONS:
            raise bad("reply markup is too long")
        for row in rows:
            for button in row:
                data = button.get("callback_data") if isinstance(button, dict) else None
                if data is not None and not (
                    isinstance(data, str)
                    and 1 <= len(data.encode("utf-8", "surrogatepass")) <= _MAX_CALLBACK_DATA
                ):
                    raise bad("BUTTON_DATA_INVALID")
    return markup


def parse_html(source: str) -> str:
    """Return the plain text of an HTML-formatted message, failing with Telegram's words where it would.

    Follows td's parse_html (td/telegram/MessageEntity.cpp, which the Bot API server runs): byte offsets
    count UTF-8 bytes of the source, tag and attribute names are case-insensitive, only &lt; &gt; &amp;
    &quot; and numeric references are decoded (any other `&` stays as it is).
    """
    return _HtmlParser(source.encode("utf-8", "surrogatepass")).run()


def _unparsable(detail: str) -> ApiError:
    """Word an HTML parse failure as the Bot API does (td's text with the API's lower-cased prefix)."""
    return bad(f"can't parse entities: {detail}")


class _HtmlParser:
    """One pass over the UTF-8 bytes of an HTML message, td's state machine in Python."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.out = bytearray()
        self.i = 0

    def at(self, i: int) -> int:
        """Return the byte at `i`, or 0 past the end like td's NUL-terminated string."""
        return self.data[i] if i < len(self.data) else 0

    def run(self) -> str:
        """Parse the whole text and return what is left once tags are gone and entities decoded."""
        data = self.data
        # (tag name, argument, length of the output when the tag opened), innermost last.
        open_tags: list[tuple[str, str, int]] = []
        while self.i < len(data):
            c = data[self.i]
            if c == ord("&"):
                decoded = self.entity(self.i)
                if decoded is not None:
                    char, self.i = decoded
                    self.out += char.encode("utf-8", "surrogatepass")
                    continue
            if c != ord("<"):
                self.out.append(c)
                self.i += 1
                continue
            begin = self.i
            self.i += 1
            if self.at(self.i) != ord("/"):
                open_tags.append(self.start_tag(begin))
            else:
                self.end_tag(begin, open_tags)
            self.i += 1  # past the closing ">"
        if open_tags:
            raise _unparsable(f"Can't find end tag corresponding to start tag {open_tags[-1][0]}")
        try:
            return self.out.decode("utf-8")
        except UnicodeDecodeError:
            raise _unparsable(
                "Text contains invalid Unicode characters after decoding HTML entities, "
                "check for unmatched surrogate code units"
            ) from None

    def start_tag(self, begin: int) -> tuple[str, str, int]:
        """Read `<tag attr="value" ...>` starting at `begin`; leave self.i on its ">"."""
        at = self.at
        while at(self.i) not in _SPACES and at(self.i) != ord(">"):
            self.i += 1
        if at(self.i) == 0:
            raise _unparsable(f"Unclosed start tag at byte offset {begin}")
        tag = self.data[begin + 1 : self.i].lower().decode("utf-8", "replace")
        if tag not in _HTML_TAGS:
            raise _unparsable(f'Unsupported start tag "{tag}" at byte offset {begin}')
        argument = ""
        while at(self.i) != ord(">"):
            while at(self.i) != 0 and at(self.i) in _SPACES:
                self.i += 1
            if at(self.i) == ord(">"):
                break
            name_begin = self.i
            while at(self.i) not in _SPACES and at(self.i) != ord("="):
                self.i += 1
            name = self.data[name_begin : self.i]
            if not name:
                raise _unparsable(f'Empty attribute name in the tag "{tag}" at byte offset {begin}')
            while at(self.i) != 0 and at(self.i) in _SPACES:
                self.i += 1
            if at(self.i) != ord("="):
                raise _unparsable(
                    f'Expected equal sign in declaration of an attribute of the tag "{tag}" '
                    f"at byte offset {begin}"
                )
            self.i += 1
            while at(self.i) != 0 and at(self.i) in _SPACES:
                self.i += 1
            if at(self.i) == 0:
                raise _unparsable(f'Unclosed start tag "{tag}" at byte offset {begin}')
            value = self.attribute_value()
            if at(self.i) == 0:
                raise _unparsable(f"Unclosed start tag at byte offset {begin}")
            if tag == "a" and name == b"href":
                argument = value
            elif tag == "code" and name == b"class" and value.startswith("language-"):
                argument = value.removeprefix("language-")
            elif tag == "span" and name == b"class" and value.startswith("tg-"):
                argument = value.removeprefix("tg-")
            elif tag == "tg-emoji" and name == b"emoji-id":
                argument = value
        if tag == "span" and argument != "spoiler":
            raise _unparsable(f'Tag "span" must have class "tg-spoiler" at byte offset {begin}')
        return tag, argument, len(self.out)

    def attribute_value(self) -> str:
        """Read a quoted string or a bare name token at self.i."""
        at = self.at
        quote = at(self.i)
        if quote not in (ord("'"), ord('"')):
            token_begin = self.i
            while chr(at(self.i)).isascii() and (chr(at(self.i)).isalnum() or at(self.i) in b".-"):
                self.i += 1
            if at(self.i) not in _SPACES and at(self.i) != ord(">"):
                raise _unparsable(f"Unexpected end of name token at byte offset {token_begin}")
            return self.data[token_begin : self.i].lower().decode("utf-8", "replace")
        self.i += 1
        value = bytearray()
        while at(self.i) != quote and at(self.i) != 0:
            if at(self.i) == ord("&"):
                decoded = self.entity(self.i)
                if decoded is not None:
                    char, self.i = decoded
                    value += char.encode("utf-8", "surrogatepass")
                    continue
            value.append(at(self.i))
            self.i += 1
        if at(self.i) == quote:
            self.i += 1
        return value.decode("utf-8", "replace")

    def end_tag(self, begin: int, open_tags: list[tuple[str, str, int]]) -> None:
        """Read `</tag>` starting at `begin` and close the innermost open tag; leave self.i on its ">"."""
        at = self.at
        if not open_tags:
            raise _unparsable(f"Unexpected end tag at byte offset {begin}")
        while at(self.i) not in _SPACES and at(self.i) != ord(">"):
            self.i += 1
        name = self.data[begin + 2 : self.i].lower().decode("utf-8", "replace")
        while at(self.i) != 0 and at(self.i) in _SPACES:
            self.i += 1
        if at(self.i) != ord(">"):
            raise _unparsable(f"Unclosed end tag at byte offset {begin}")
        tag, argument, opened_at = open_tags[-1]
        if name and name != tag:
            raise _unparsable(
                f'Unmatched end tag at byte offset {begin}, expected "</{tag}>", found "</{name}>"'
            )
        if tag == "tg-emoji" and len(self.out) > opened_at and not _is_custom_emoji_id(argument):
            raise _unparsable("Invalid custom emoji identifier specified")
        open_tags.pop()

    def entity(self, pos: int) -> tuple[str, int] | None:
        """Decode the character reference at `pos` (td's decode_html_entity): the character and where
        the text goes on, or None when td would keep the "&" as it is."""
        at = self.at
        end = pos + 1
        code = 0
        if at(pos + 1) == ord("#"):
            end += 1
            digits = "0123456789abcdefABCDEF" if at(pos + 2) == ord("x") else "0123456789"
            base = 16 if at(pos + 2) == ord("x") else 10
            end += base == 16
            while at(end) and chr(at(end)) in digits:
                code = code * base + int(chr(at(end)), 16)
                end += 1
            if code == 0 or code >= 0x10FFFF or end - pos >= 10:
                return None
            char = chr(code)
        else:
            while chr(at(end)).isascii() and chr(at(end)).isalpha():
                end += 1
            named = _NAMED_ENTITIES.get(self.data[pos + 1 : end])
            if named is None:
                return None
            char = named
        if at(end) == ord(";"):
            end += 1
        return char, end


def _is_custom_emoji_id(argument: str) -> bool:
    """Tell whether a tg-emoji's emoji-id is what td accepts: a non-zero signed 64-bit integer."""
    if _INTEGER_RE.fullmatch(argument) is None:
        return False
    value = int(argument)
    return value != 0 and -(2**63) <= value < 2**63
