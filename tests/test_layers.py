"""The layers' import rules, checked on every run: handlers → services → storage, and python-telegram-bot
only at the edge. A rule broken today is listed with its reason in KNOWN; nothing new may join it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# module prefix of the importer → module prefixes it must never import
RULES: dict[str, tuple[str, ...]] = {
    # SQL knows no feature, no Telegram and no texts (only the pure vocabulary of bot.domain).
    "storage": (
        "bot.runtime",
        "bot.services",
        "bot.security",
        "bot.app",
        "bot.wiring",
        "bot.settings",
        "handlers",
        "messages",
        "telegram",
    ),
    # Pure rules and vocabulary: no I/O of any kind, so every layer may use them.
    "bot.domain": (
        "bot.runtime",
        "bot.services",
        "bot.security",
        "storage",
        "handlers",
        "messages",
        "telegram",
        "sqlalchemy",
        "aiohttp",
    ),
    # The durable machinery knows no feature and no glue.
    "bot.runtime": (
        "bot.services",
        "handlers",
        "telegram",
        "bot.app",
        "bot.runner",
        "bot.context",
        "bot.wiring",
    ),
    # Features never talk to Telegram through the library, nor reach up into the glue.
    "bot.services": (
        "handlers",
        "telegram",
        "bot.app",
        "bot.runner",
        "bot.context",
        "bot.wiring",
        "bot.ptb_request",
        "bot.send_limits",
    ),
    # Keys, ciphers and bindings know nothing of features, of the machinery that uses them, or Telegram.
    "bot.security": ("handlers", "telegram", "messages", "bot.services", "bot.runtime"),
    # Texts and screens render records; they never call a service or route an update.
    "messages": ("handlers", "bot.services", "bot.runtime", "bot.app", "bot.wiring"),
    # Glue calls services; SQL and transactions are theirs.
    "handlers": ("storage", "sqlalchemy"),
}

# Imports that break a rule today, each with why it is there; #13 (the layout) removes them.
KNOWN: dict[tuple[str, str], str] = {
    (
        "bot.services.upkeep.key_rotation",
        "bot.wiring",
    ): "rotation opens the same services as a start to re-seal",
    ("bot.security.key_guard", "bot.runtime.audit"): "a key is checked against the audit chain's MACs",
    ("bot.security.key_guard", "bot.runtime.clock"): "the audit chain it checks needs a clock",
    ("handlers.workspace_screens", "storage.audit"): "the audit log is shown as stored",
}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _sources() -> list[Path]:
    return [p for folder in ("bot", "handlers", "storage", "messages") for p in (ROOT / folder).rglob("*.py")]


def violations() -> set[tuple[str, str]]:
    """Return every (importer, imported) pair that breaks a rule."""
    broken: set[tuple[str, str]] = set()
    for path in _sources():
        importer = _module(path)
        for layer, forbidden in RULES.items():
            if not _within(importer, layer):
                continue
            for imported in _imports(path):
                if any(_within(imported, banned) for banned in forbidden):
                    broken.add((importer, imported))
    return broken


def test_no_new_import_crosses_a_layer() -> None:
    new = sorted(violations() - set(KNOWN))
    assert not new, "imports that cross a layer:\n" + "\n".join(f"{a} imports {b}" for a, b in new)


def test_every_known_exception_still_exists() -> None:
    # A debt paid off leaves the list, so the list never excuses an import that came back later.
    gone = sorted(set(KNOWN) - violations())
    assert not gone, f"no longer needed in KNOWN: {gone}"


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("storage.reports", "bot.services.reports.intake"),
        ("bot.services.desk.browse", "telegram"),
        ("messages.x", "handlers"),
        ("bot.runtime.outbox", "bot.services.triage.alerts"),
        ("bot.domain.report_form", "storage.reports"),
        ("handlers.desk", "sqlalchemy"),
        ("bot.security.sealed_fields", "bot.services.contact"),
        ("bot.security.bindings", "bot.runtime.outbox"),
    ],
)
def test_the_rules_catch_a_crossing(importer: str, imported: str) -> None:
    layer = next(layer for layer in RULES if _within(importer, layer))
    assert any(_within(imported, banned) for banned in RULES[layer])
