"""Check that the fake refuses texts, captions and HTML as Telegram does (tests/fakebot/formatting.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.fakebot import FakeBotApi
from tests.fakebot.formatting import parse_html
from tests.fakebot.wire import ApiError


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotApi]:
    """Run a fake Bot API server for one test."""
    async with FakeBotApi() as server:
        yield server
    assert server.server_errors == []


@pytest.fixture
async def http(fake: FakeBotApi) -> AsyncIterator[httpx.AsyncClient]:
    """Return a bare httpx client rooted at the bot's API path."""
    async with httpx.AsyncClient(base_url=f"{fake.url}/bot{fake.token}/") as client:
        yield client


async def call(http: httpx.AsyncClient, method: str, **params: object) -> str | None:
    """Call a method and return Telegram's error description, or None when it succeeded."""
    answer = (await http.post(method, json=params)).json()
    if answer["ok"]:
        return None
    assert answer["error_code"] == 400, answer
    description = answer["description"]
    assert isinstance(description, str)
    return description


def html_error(source: str) -> str:
    """Return the description Telegram gives for malformed HTML."""
    with pytest.raises(ApiError) as refused:
        parse_html(source)
    assert refused.value.status == 400
    return refused.value.description.removeprefix("Bad Request: can't parse entities: ")


# ---------------------------------------------------------------------- lengths after entity parsing


async def test_text_is_measured_after_html_parsing(http: httpx.AsyncClient) -> None:
    """Tags and character references do not count: Telegram measures the text a reader sees."""
    assert await call(http, "sendMessage", chat_id=1, text=f"<b>{'x' * 4096}</b>", parse_mode="HTML") is None
    assert await call(http, "sendMessage", chat_id=1, text="&lt;" * 4096, parse_mode="HTML") is None
    assert await call(http, "sendMessage", chat_id=1, text=f"{'я' * 4096}\n\n", parse_mode="HTML") is None

    too_long = "Bad Request: message is too long"
    assert (
        await call(http, "sendMessage", chat_id=1, text=f"<b>{'x' * 4097}</b>", parse_mode="HTML") == too_long
    )
    # Without parse_mode the markup is text like any other and counts.
    assert await call(http, "sendMessage", chat_id=1, text="&lt;" * 1025) == too_long
    sent = await http.post("sendMessage", json={"chat_id": 1, "text": "short"})
    message_id = sent.json()["result"]["message_id"]
    edit = {"chat_id": 1, "message_id": message_id, "parse_mode": "HTML"}
    assert await call(http, "editMessageText", text=f"<i>{'y' * 4097}</i>", **edit) == too_long
    assert await call(http, "editMessageText", text=f"<i>{'y' * 4096}</i>", **edit) is None


async def test_text_left_empty_by_parsing_is_refused(http: httpx.AsyncClient) -> None:
    empty = "Bad Request: message text is empty"
    assert await call(http, "sendMessage", chat_id=1, text="") == empty
    assert await call(http, "sendMessage", chat_id=1, text=" \n ") == empty
    assert await call(http, "sendMessage", chat_id=1, text="<b> </b>\n<i></i>", parse_mode="HTML") == empty
    # Without parse_mode the tags are what the reader sees.
    assert await call(http, "sendMessage", chat_id=1, text="<b> </b>") is None


async def test_captions_over_1024_characters_are_refused(fake: FakeBotApi, http: httpx.AsyncClient) -> None:
    too_long = "Bad Request: message caption is too long"
    photo = fake.add_file(b"jpeg", file_name="p.jpg")
    send = {"chat_id": 2, "photo": photo, "parse_mode": "HTML"}
    assert await call(http, "sendPhoto", caption="c" * 1025, **send) == too_long
    assert await call(http, "sendPhoto", caption=f"<b>{'c' * 1025}</b>", **send) == too_long
    assert await call(http, "sendPhoto", caption=f"<b>{'c' * 1024}</b>", **send) is None

    message_id = fake.chat_messages(2)[-1]["message_id"]
    edit = {"chat_id": 2, "message_id": message_id, "parse_mode": "HTML"}
    assert await call(http, "editMessageCaption", caption="&amp;" * 1025, **edit) == too_long
    assert await call(http, "editMessageCaption", caption="&amp;" * 1024, **edit) is None
    copy = {"chat_id": 3, "from_chat_id": 2, "message_id": message_id}
    assert await call(http, "copyMessage", caption="c" * 1025, **copy) == too_long
    album = [{"type": "photo", "media": photo, "caption": "c" * 1025}, {"type": "photo", "media": photo}]
    assert await call(http, "sendMediaGroup", chat_id=2, media=album) == too_long
    assert [m.get("caption") for m in fake.chat_messages(2)] == ["&amp;" * 1024]
    assert fake.chat_messages(3) == []


# ---------------------------------------------------------------------- HTML Telegram cannot parse


async def test_malformed_html_is_refused_with_telegrams_words(
    fake: FakeBotApi, http: httpx.AsyncClient
) -> None:
    description = await call(http, "sendMessage", chat_id=1, text="1 < 2 and <b>bold</b>", parse_mode="HTML")
    assert description == 'Bad Request: can\'t parse entities: Unsupported start tag "" at byte offset 2'
    caption = await call(
        http, "sendDocument", chat_id=1, document=fake.add_file(b"pdf"), caption="<b>x", parse_mode="HTML"
    )
    assert caption == "Bad Request: can't parse entities: Can't find end tag corresponding to start tag b"
    assert fake.chat_messages(1) == []
    # The same texts without parse_mode are plain text and go through.
    assert await call(http, "sendMessage", chat_id=1, text="1 < 2 and <b>bold</b>") is None


@pytest.mark.parametrize(
    ("source", "description"),
    [
        ("<b>bold", "Can't find end tag corresponding to start tag b"),
        ("<b><i>both</i>", "Can't find end tag corresponding to start tag b"),
        ("a <x> b", 'Unsupported start tag "x" at byte offset 2'),
        ("é <p>", 'Unsupported start tag "p" at byte offset 3'),  # offsets count UTF-8 bytes
        ("<B>x</b><hr/>", 'Unsupported start tag "hr/" at byte offset 8'),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("<b>x</b y>", "Unclosed end tag at byte offset 4"),
        ("<b", "Unclosed start tag at byte offset 0"),
        ('<a href="https://example.org>x', "Unclosed start tag at byte offset 0"),
        ("<a href= ", 'Unclosed start tag "a" at byte offset 0'),
        (
            "<a href>x</a>",
            'Expected equal sign in declaration of an attribute of the tag "a" at byte offset 0',
        ),
        ("<b =x>y</b>", 'Empty attribute name in the tag "b" at byte offset 0'),
        ("<a href=x!>y</a>", "Unexpected end of name token at byte offset 8"),
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
        ('<tg-emoji emoji-id="abc">🙂</tg-emoji>', "Invalid custom emoji identifier specified"),
        (
            "&#xd800;",
            "Text contains invalid Unicode characters after decoding HTML entities, "
            "check for unmatched surrogate code units",
        ),
    ],
)
def test_html_parse_errors(source: str, description: str) -> None:
    assert html_error(source) == description


@pytest.mark.parametrize(
    ("source", "visible"),
    [
        ("<b>bold</b> <i>it</i> <u>u</u> <s>s</s> <code>c</code>", "bold it u s c"),
        ('<a href="https://example.org/?a=1&amp;b=2">link</a>', "link"),
        ('<pre><code class="language-python">x = 1</code></pre>', "x = 1"),
        ('<span class="tg-spoiler">hidden</span> <tg-spoiler>too</tg-spoiler>', "hidden too"),
        ("<blockquote>quote</blockquote><STRONG>loud</Strong>", "quoteloud"),
        ('<tg-emoji emoji-id="5368324170671202286">👍</tg-emoji>', "👍"),
        ("&lt;b&gt; &amp; &quot; &#65;&#x42; &nbsp; AT&T &unknown;", '<b> & " AB &nbsp; AT&T &unknown;'),
        ("<b>x</>", "x"),  # an empty end tag closes whatever is open
    ],
)
def test_html_telegram_accepts(source: str, visible: str) -> None:
    assert parse_html(source) == visible
