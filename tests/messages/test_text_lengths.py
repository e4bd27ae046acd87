"""Every text fits Telegram's limits in every language, rendered with the longest values its placeholders
can take: a callback answer (toast or alert) ≤ 200 characters, a button label ≤ 64, a caption ≤ 1024 and a
message ≤ 4096 visible characters.

Which keys are callback answers, button labels or captions is read from the source with `ast`, so a new
`query.answer(context.plain("key"))` is checked without anyone remembering to list it here.
"""

from __future__ import annotations

import ast
import html
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

from bot.domain import report_form
from bot.domain.commands import usage_line
from bot.domain.identity import SAFEWORD_MAX
from bot.services import contact as contact_service
from bot.services.access.team import NAME_MAX
from bot.services.campaigns import compose as campaign_service
from bot.services.cases.commands import COMMANDS
from bot.services.desk import browse as desk_service
from messages import LANGUAGES, Safe, catalogs
from messages.catalog import placeholders

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("handlers", "bot", "messages")

# Telegram's answerCallbackQuery takes 0-200 characters; longer is "MESSAGE_TOO_LONG".
CALLBACK_LIMIT = 200
# Telegram accepts longer labels but shows one line of a button, cut with "…" on a phone at about 40-60
# characters: 64 keeps every label readable while the longest today (a revoke button with a 32-character
# name) fits in every language.
BUTTON_LIMIT = 64
CAPTION_LIMIT = 1024
MESSAGE_LIMIT = 4096

DATE = "31.12.2031 23:59"
NUMBER = "99999"
NAME = "Ж" * NAME_MAX
# A Telegram person as the members notices show them: first and last name (64 each) and @username (32).
TELEGRAM_PERSON = f"{'F' * 64} {'L' * 64} (@{'u' * 32})"
CAMPAIGN_TITLE = "T" * campaign_service.TITLE_LIMIT
# bot/services/cases/hearings.py: case titles 300, descriptions 1000, charges 500, courts 200, addresses 300.
CASE_TITLE, DESCRIPTION, CHARGES, COURT, ADDRESS = ("c" * 300, "d" * 1000, "a" * 500, "k" * 200, "s" * 300)

Value = str | Callable[[str], str]


def _longest_of(prefix: str) -> Callable[[str], str]:
    """The longest catalog text under a prefix (a category, a status), in the language rendered."""

    def longest(language: str) -> str:
        texts = catalogs().keys(language)
        return max((texts[k] for k in texts if k.startswith(prefix)), key=len)

    return longest


def _longest_among(*keys: str) -> Callable[[str], str]:
    """The longest of a few catalog texts (set / not set), in the language rendered."""
    return lambda language: max((catalogs().keys(language)[k] for k in keys), key=len)


def _commands(language: str) -> str:
    texts = catalogs().keys(language)
    return "\n".join(
        f"/{k.removeprefix('command.')} — {v}" for k, v in texts.items() if k.startswith("command.")
    )


def _usage_line(language: str) -> str:
    # The longest line a declared command's usage assembles from its fields' labels.
    return max(
        (usage_line(spec, lambda key: catalogs().plain(language, key)) for spec in COMMANDS.values()), key=len
    )


# Placeholder name -> its longest value, where the name means one thing everywhere.
LONGEST: dict[str, Value] = {
    **dict.fromkeys(
        ("at", "when", "date", "since", "created", "occurred", "expires", "deadline", "acknowledged"), DATE
    ),
    **dict.fromkeys(
        (
            "count",
            "hours",
            "minutes",
            "limit",
            "total",
            "index",
            "rows",
            "people",
            "threshold",
            "freed",
            "sent",
            "queued",
            "failed",
            "blocked",
            "cancelled",
            "acted",
            "withdrawn",
            "page",
            "scanned",
            "length",
            "excess",
            "weeks",
            "opened",
            "closed",
            "released",
            "offset",
            "id",
            "size",
            "templates",
            "waiting",
            "entry",
            "window",
        ),
        NUMBER,
    ),
    **dict.fromkeys(("name", "who", "assignee", "actor"), NAME),
    "code": "R-XXXXX",
    "original": "R-XXXXX",
    "ref": "0123456789abcdef",
    "title": CASE_TITLE,
    "case": CASE_TITLE,
    "description": DESCRIPTION,
    "charges": CHARGES,
    "court": COURT,
    "address": ADDRESS,
    "outcome": "o" * 300,
    "place": "p" * report_form.MAX_PLACE,
    "where": "p" * report_form.MAX_PLACE,
    "question": "q" * contact_service.MESSAGE_LIMIT,
    "text": "t" * report_form.MAX_SOS_LINE,
    "value": "v" * report_form.MAX_TEXT,
    "excerpt": "e" * 200,
    "category": _longest_of("category."),
    "region": _longest_of("region."),
    "status": _longest_of("status."),
    "state": _longest_among("campaign.yes", "campaign.no"),
    "commands": _commands,
    "contact": "c" * 200,
    "evidence": "e" * 200,
    "location": "41.12345, 74.12345",
    "latitude": "-89.99",
    "longitude": "-179.99",
    # Telegram's error descriptions and our own details (a refused step, an HTML problem).
    **dict.fromkeys(("reason", "error", "detail", "why", "part"), "r" * 200),
    # Ten names of a /members check: the notice lists at most what a group check turned up.
    **dict.fromkeys(("names", "holders"), ", ".join([NAME] * 10)),
    "link": "https://t.me/" + "b" * 32 + "?start=inv_" + "t" * 43,
    "hash": "f" * 64,
    "sha256": "f" * 64,
    "chat": "g" * 128,  # a group's title
    "chat_id": "-1001234567890",
    "zone": "America/Argentina/ComodRivadavia",
    "language": "UZ",
    "format": "XLSX",
    "kind": "k" * 32,
    "role": "coordinator",
    "action": "a" * 32,
    "target": "R-XXXXX",
    "audience": "a" * 300,
    "channels": _longest_among("campaign.yes", "campaign.no"),
    "image": "yes",
    "line": _usage_line,
    "command": max(COMMANDS, key=len),
    "field": _longest_of("field."),
    # The organisation's bots: a username (32 characters at most) or, before getMe answered, the id.
    **dict.fromkeys(("backup", "active", "new", "old"), "@" + "b" * 32),
    **dict.fromkeys(("unreachable", "reaches"), NUMBER),
    "health": _longest_among("fleet.answers", "fleet.refused"),
    "problem": _longest_among(
        "hearings.bad_time", *(k for k in catalogs().keys("en") if k.startswith("cmd."))
    ),
    "step": NUMBER,
    "day": DATE.split()[0],
    "hour": "23",
    "word": "w" * SAFEWORD_MAX,
    "example": "b" * 32,
    # Usernames (32 at most) of the running bot and of ten listed in JARCHY_OFFICIAL_BOTS.
    "official": ", ".join(["@" + "b" * 32] * 11),
}

# Per key, where a placeholder means something else there.
OVERRIDES: dict[str, dict[str, Value]] = {
    "fleet.line": {
        "name": "@" + "b" * 32,
        "role": _longest_among("fleet.role_main", "fleet.role_backup"),
        "state": _longest_among("fleet.in_use", "fleet.standby"),
    },
    **{
        key: {"name": "@" + "b" * 32, "channels": NUMBER}
        for key in (
            "fleet.switched",
            "fleet.switched_admin",
            "fleet.switch_button",
            "fleet.switch_confirm",
            "fleet.switch_confirm_button",
            "fleet.already_in_use",
        )
    },
    **{
        key: {"name": TELEGRAM_PERSON, "who": TELEGRAM_PERSON}
        for key in ("members.stranger_joined", "members.stranger_removed", "members.unknown_id")
    },
    **{key: {"title": CAMPAIGN_TITLE} for key in catalogs().keys("en") if key.startswith("campaign.")},
    # The card says whether a body is set, not the body; templates are language codes.
    "campaign.card": {
        "title": CAMPAIGN_TITLE,
        "text": _longest_among("campaign.set", "campaign.unset"),
        "templates": "en, ru, ky, uz",
        "audience": "a" * 300,
    },
    # bot/services/desk/browse.py quotes at most 40 characters of what it did not understand.
    "desk.filter_invalid": {"part": "p" * 40},
    **{key: {"name": "b" * 32} for key in ("verify.official", "verify.foreign")},
    "contact.answer": {"text": "t" * contact_service.MESSAGE_LIMIT},
    "desk.note_answer": {"text": "t" * desk_service.NOTE_LIMIT},
    "desk.note_note": {"text": "t" * desk_service.NOTE_LIMIT},
    "desk.note_question": {"text": "t" * desk_service.NOTE_LIMIT},
    "alert.people": {"value": str(report_form.MAX_PEOPLE)},
    "campaign.audience_case": {"value": CASE_TITLE},
    "campaign.audience_language": {"value": "UZ"},
    "campaign.audience_topic": {"value": "v" * 64},
    "report.text_preview": {"text": "t" * report_form.MAX_TEXT},
}

# Texts whose placeholders hold composed content bounded elsewhere, with the reason.
EXEMPT: dict[str, str] = {}
# Refusals (all of which count as callback answers, since refusal(plain=True) may show any) that are never
# raised where a button is pressed, with the reason; they are still checked as messages.
NOT_ANSWERED: dict[str, str] = {
    "desk.filter_invalid": "raised only when typed /reports filters are read; the Next button decodes"
    " filters the bot packed itself and refuses a garbled token with callback.stale",
}


@dataclass
class Uses:
    """Keys found in each place a text is shown."""

    callback: set[str] = field(default_factory=set)
    button: set[str] = field(default_factory=set)
    caption: set[str] = field(default_factory=set)
    refusals: bool = False  # a refusal() is shown as a callback answer somewhere


def _values(language: str, key: str) -> dict[str, str]:
    template = catalogs().keys(language)[key]
    chosen = {**LONGEST, **OVERRIDES.get(key, {})}
    values: dict[str, str] = {}
    for name in placeholders(template):
        assert name in chosen, f"{key}: no longest value for {{{name}}}: add it to LONGEST or OVERRIDES"
        value = chosen[name]
        values[name] = value(language) if callable(value) else value
    return values


def visible_length(rendered: str) -> int:
    """Characters Telegram counts after parsing HTML: tags stripped, entities unescaped."""
    return len(html.unescape(re.sub(r"<[^>]+>", "", rendered)))


def longest_plain(language: str, key: str) -> int:
    return len(catalogs().plain(language, key, **_values(language, key)))


def longest_html(language: str, key: str) -> int:
    # Composed values (lists of commands) are passed as they are; the rest is escaped, then unescaped.
    values = {name: Safe(v) if name == "commands" else v for name, v in _values(language, key).items()}
    return visible_length(catalogs().text(language, key, **values))


# ---------------------------------------------------------------------------------------------- scanner


@dataclass
class _Module:
    path: Path
    tree: ast.Module
    parents: dict[ast.AST, ast.AST]


@cache
def _modules() -> tuple[_Module, ...]:
    found = []
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
            found.append(_Module(path, tree, parents))
    return tuple(found)


def _functions(name: str, *, services: bool | None = None) -> Iterator[tuple[_Module, ast.AST]]:
    for module in _modules():
        in_services = "services" in module.path.parts
        if services is not None and in_services != services:
            continue
        for node in ast.walk(module.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
                yield module, node


def _scope(module: _Module, node: ast.AST) -> ast.AST:
    current: ast.AST | None = node
    while current is not None and not isinstance(
        current, ast.FunctionDef | ast.AsyncFunctionDef | ast.Module
    ):
        current = module.parents.get(current)
    return current or module.tree


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


class _Resolver:
    """Follow an expression to the catalog keys it can render: literals, both sides of `x if c else y`,
    f-string prefixes, local assignments, a helper's parameters (through its call sites) and keys a
    service method returns."""

    def __init__(self) -> None:
        self.refusals = False
        self._seen: set[tuple[int, int]] = set()

    def keys(self, module: _Module, expr: ast.AST | None, depth: int = 0) -> set[str]:
        if expr is None or depth > 8 or (id(module), id(expr)) in self._seen:
            return set()
        self._seen.add((id(module), id(expr)))
        try:
            return self._keys(module, expr, depth + 1)
        finally:
            self._seen.discard((id(module), id(expr)))

    def _keys(self, module: _Module, expr: ast.AST, depth: int) -> set[str]:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return {expr.value}
        if isinstance(expr, ast.JoinedStr):
            return self._formatted(module, expr)
        if isinstance(expr, ast.IfExp):
            return self.keys(module, expr.body, depth) | self.keys(module, expr.orelse, depth)
        if isinstance(expr, ast.BinOp):
            return self.keys(module, expr.left, depth) | self.keys(module, expr.right, depth)
        if isinstance(expr, ast.Await):
            return self.keys(module, expr.value, depth)
        if isinstance(expr, ast.Subscript):
            return self.keys(module, expr.value, depth)  # a text cut to a limit: text[:1024]
        if isinstance(expr, ast.List | ast.Tuple):
            return set().union(*(self.keys(module, element, depth) for element in expr.elts))
        if isinstance(expr, ast.ListComp | ast.GeneratorExp):
            return self.keys(module, expr.elt, depth)
        if isinstance(expr, ast.Call):
            return self._call(module, expr, depth)
        if isinstance(expr, ast.Name):
            return self._name(module, expr, depth)
        if isinstance(expr, ast.Attribute) and expr.attr == "key" and isinstance(expr.value, ast.Name):
            # `answer.key`, `refused.key`: what the named value was made from.
            return self._name(module, expr.value, depth, attribute=True)
        return set()

    def _formatted(self, module: _Module, expr: ast.JoinedStr) -> set[str]:
        """f"triage.{action}": the loop's literal values where `action` runs over them, else a prefix."""
        parts = expr.values
        head = parts[0] if parts else None
        if not (isinstance(head, ast.Constant) and isinstance(head.value, str) and head.value):
            return set()
        tail = parts[2] if len(parts) == 3 and isinstance(parts[2], ast.Constant) else None
        middle = parts[1] if len(parts) > 1 else None
        if (
            len(parts) <= 3
            and isinstance(middle, ast.FormattedValue)
            and isinstance(middle.value, ast.Name)
            and (values := _loop_values(_scope(module, expr), middle.value.id))
        ):
            suffix = str(tail.value) if tail is not None else ""
            return {f"{head.value}{value}{suffix}" for value in values}
        return {head.value + "*"}

    def _call(self, module: _Module, call: ast.Call, depth: int) -> set[str]:
        name = _called_name(call)
        if name in ("plain", "text"):
            # context.plain("key") takes the key first; texts.plain(language, "key") second.
            on_context = isinstance(call.func, ast.Attribute) and (
                isinstance(call.func.value, ast.Name) and call.func.value.id == "context"
            )
            index = 0 if on_context else 1
            return self.keys(module, call.args[index], depth) if len(call.args) > index else set()
        if name == "refusal":
            self.refusals = True
            return set()
        if name == "join" and call.args:
            # "\n".join(parts): a caption or message made of several texts.
            return self.keys(module, call.args[0], depth)
        if name is None:
            return set()
        found: set[str] = set()
        # context.services.campaigns.act(...) is a service's method, not a handler's local act().
        for owner, function in _functions(
            name, services=True if "services" in ast.unparse(call.func) else None
        ):
            for node in ast.walk(function):
                if isinstance(node, ast.Return) and node.value is not None:
                    found |= self._returned(owner, node.value, depth)
        return found

    def _returned(self, module: _Module, value: ast.AST, depth: int) -> set[str]:
        # A service returns ("key", ...) or Answer("key", ...): the key is its first element.
        if isinstance(value, ast.Tuple) and value.elts:
            return self.keys(module, value.elts[0], depth)
        if isinstance(value, ast.Call) and _called_name(value) == "Answer" and value.args:
            return self.keys(module, value.args[0], depth)
        return self.keys(module, value, depth)

    def _name(self, module: _Module, name: ast.Name, depth: int, *, attribute: bool = False) -> set[str]:
        scope = _scope(module, name)
        found: set[str] = set()
        for node in ast.walk(scope):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("append", "extend")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == name.id
                and node.args
            ):
                found |= self.keys(module, node.args[0], depth)  # parts.append(texts.plain(...))
            if isinstance(node, ast.ExceptHandler) and node.name == name.id:
                self.refusals = True  # `except Refused as refused`: shown as a refusal
            if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id == name.id:
                        found |= self.keys(module, node.value, depth)
                    elif isinstance(target, ast.Tuple):
                        for position, element in enumerate(target.elts):
                            if isinstance(element, ast.Name) and element.id == name.id:
                                found |= self._unpacked(module, node.value, position, depth)
        if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
            found |= self._parameter(module, scope, name.id, depth)
        return found

    def _unpacked(self, module: _Module, value: ast.AST | None, position: int, depth: int) -> set[str]:
        if isinstance(value, ast.Tuple) and position < len(value.elts):
            return self.keys(module, value.elts[position], depth)
        call = value.value if isinstance(value, ast.Await) else value
        if isinstance(call, ast.Call) and position == 0:
            return self.keys(module, call, depth)
        return set()

    def _parameter(
        self, module: _Module, function: ast.FunctionDef | ast.AsyncFunctionDef, name: str, depth: int
    ) -> set[str]:
        params = [a.arg for a in (*function.args.posonlyargs, *function.args.args)]
        if name not in params:
            return set()
        position = params.index(name) - (1 if params and params[0] == "self" else 0)
        found: set[str] = set()
        for caller in _modules():
            for node in ast.walk(caller.tree):
                if isinstance(node, ast.Call) and _called_name(node) == function.name:
                    argument = next((k.value for k in node.keywords if k.arg == name), None)
                    if argument is None and position < len(node.args):
                        argument = node.args[position]
                    found |= self.keys(caller, argument, depth)
        return found


def _loop_values(scope: ast.AST, name: str, depth: int = 0) -> set[str]:
    """The string literals a loop variable takes: `for action in ("a", "b")`, or through `for row in rows`
    where rows is a local list of lists."""
    if depth > 3:
        return set()
    found: set[str] = set()
    for node in ast.walk(scope):
        bindings: list[tuple[ast.AST, ast.AST]] = []
        if isinstance(node, ast.For | ast.comprehension):
            bindings.append((node.target, node.iter))
        elif isinstance(node, ast.Assign):
            bindings.extend((target, node.value) for target in node.targets)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            bindings.append((node.target, node.value))  # first: list[TriageAction] = [...]
        for target, source in bindings:
            if isinstance(target, ast.Name) and target.id == name:
                found |= {
                    n.value
                    for n in ast.walk(source)
                    if isinstance(n, ast.Constant) and isinstance(n.value, str)
                }
                # rows = [first, ["spam"]] with first = ["take", "close"]: follow the names inside too.
                for inner in {n.id for n in ast.walk(source) if isinstance(n, ast.Name)}:
                    found |= _loop_values(scope, inner, depth + 1)
    return found


def _text_argument(call: ast.Call) -> ast.AST | None:
    keyword = next((k.value for k in call.keywords if k.arg == "text"), None)
    return keyword if keyword is not None else (call.args[0] if call.args else None)


def _expand(found: set[str]) -> set[str]:
    """Keep catalog keys; an f-string prefix stands for every key it starts."""
    english = catalogs().keys("en")
    keys = {k for k in found if k in english}
    for prefix in (k[:-1] for k in found if k.endswith("*")):
        keys |= {k for k in english if k.startswith(prefix)}
    return keys


def _refused_keys() -> set[str]:
    """Keys raised as refusals in bot/services: Refused("key") and its subclasses, e.g. TeamError("key")."""
    refusal_classes = {"Refused"}
    for module in _modules():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                if bases & {"Refused"}:
                    refusal_classes.add(node.name)
    found: set[str] = set()
    for module in _modules():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Call) and _called_name(node) in refusal_classes and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.add(first.value)
    # handlers/workspace.py refusal(): the keys it renders for the other refusals (not allowed, no report).
    for _module, function in _functions("refusal", services=False):
        found |= {
            n.value for n in ast.walk(function) if isinstance(n, ast.Constant) and isinstance(n.value, str)
        }
    return _expand(found)


@cache
def uses() -> Uses:
    """Scan the source for where each key is shown."""
    resolver = _Resolver()
    callback: set[str] = set()
    button: set[str] = set()
    caption: set[str] = set()
    for module in _modules():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Call):
                name = _called_name(node)
                if name == "answer" and (
                    any(k.arg == "show_alert" for k in node.keywords)
                    or (isinstance(node.func, ast.Attribute) and _is_query(node.func.value))
                ):
                    callback |= resolver.keys(module, _text_argument(node))
                elif name == "InlineKeyboardButton":
                    button |= resolver.keys(module, _text_argument(node))
                for keyword in node.keywords:
                    if keyword.arg == "caption":
                        caption |= resolver.keys(module, keyword.value)
            elif isinstance(node, ast.Dict):
                # {"text": label, "callback_data": ...}: a button written as JSON.
                names = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                if "text" in names and names & {"callback_data", "url"}:
                    text_value = node.values[[getattr(k, "value", None) for k in node.keys].index("text")]
                    button |= resolver.keys(module, text_value)
    callback = _expand(callback)
    if resolver.refusals:
        callback |= _refused_keys()
    return Uses(callback, _expand(button), _expand(caption), resolver.refusals)


def _is_query(value: ast.AST) -> bool:
    """`query.answer(...)`, `update.callback_query.answer(...)`: not `contact.answer(...)`."""
    if isinstance(value, ast.Name):
        return value.id == "query"
    return isinstance(value, ast.Attribute) and value.attr == "callback_query"


# ------------------------------------------------------------------------------------------------ tests


def test_the_scanner_finds_known_uses() -> None:
    found = uses()
    # Direct, through an `x if c else y`, a variable, a dict button, a helper's parameter, a refusal.
    assert {"team.revoked_short", "attend.stale", "coord.wrong_chat", "callback.stale"} <= found.callback
    assert {"team.withdrawn", "team.invite_used", "digest.opened", "triage.already_final"} <= found.callback
    assert {"campaign.template_sent", "team.name_too_long", "coord.admin_only"} <= found.callback
    assert found.refusals
    assert {"team.revoke_button", "team.withdraw_button", "button.cancel", "campaign.approve_button"} <= (
        found.button
    )
    assert {"campaign.audience_all", "button.follow", "menu.report"} <= found.button
    assert {
        "export.done",
        "calendar.caption",
        "campaign.ledger_caption",
        "stats.caption_total",
        "stats.caption_open_closed",
        "alert.evidence_caption",
    } <= found.caption
    # f"triage.{action}" over the card's rows of actions, one of them a local list.
    assert {"triage.ack", "triage.take", "triage.spam"} <= found.button
    # The full revoke text is edited into the message, never an answer.
    assert "team.revoked" not in found.callback


def test_every_placeholder_has_a_longest_value() -> None:
    for key in catalogs().keys("en"):
        _values("en", key)


def test_the_old_revoke_alert_would_not_fit() -> None:
    """handlers/team.py once answered the revoke button with "team.revoked": with a 32-character name and
    freed reports that is over Telegram's 200 (225 in Russian then, 253 in English now) and the alert
    failed; the full text now goes into the message and the answer is "team.revoked_short"."""
    assert any(longest_plain(language, "team.revoked") > CALLBACK_LIMIT for language in LANGUAGES)
    assert all(longest_plain(language, "team.revoked_short") <= CALLBACK_LIMIT for language in LANGUAGES)


@pytest.mark.parametrize("language", LANGUAGES)
def test_callback_answers_fit(language: str) -> None:
    answers = uses().callback - set(NOT_ANSWERED)
    too_long = {key: n for key in sorted(answers) if (n := longest_plain(language, key)) > CALLBACK_LIMIT}
    assert not too_long, f"{language}: callback answers over {CALLBACK_LIMIT}: {too_long}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_button_labels_fit(language: str) -> None:
    too_long = {key: n for key in sorted(uses().button) if (n := longest_plain(language, key)) > BUTTON_LIMIT}
    assert not too_long, f"{language}: button labels over {BUTTON_LIMIT}: {too_long}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_captions_fit(language: str) -> None:
    too_long = {
        key: n for key in sorted(uses().caption) if (n := longest_html(language, key)) > CAPTION_LIMIT
    }
    assert not too_long, f"{language}: captions over {CAPTION_LIMIT}: {too_long}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_messages_fit(language: str) -> None:
    found = uses()
    shown = found.callback - set(NOT_ANSWERED) | found.button | found.caption
    messages = set(catalogs().keys("en")) - shown - set(EXEMPT)
    too_long = {key: n for key in sorted(messages) if (n := longest_html(language, key)) > MESSAGE_LIMIT}
    assert not too_long, f"{language}: messages over {MESSAGE_LIMIT}: {too_long}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_refusal_too_long_for_an_alert_has_a_short_form_that_fits(language: str) -> None:
    from handlers.workspace import ALERT_VARIANTS

    for full, short in ALERT_VARIANTS.items():
        assert len(catalogs().plain(language, full, **_values(language, full))) > 200, full
        assert len(catalogs().plain(language, short, **_values(language, short))) <= 200, short
