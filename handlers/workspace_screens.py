"""Screens of the coordinators' workspace: team list, report lists and views, the audit log, stats."""

from __future__ import annotations

from collections.abc import Sequence
from zoneinfo import ZoneInfo

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.domain import dates
from bot.domain.callbacks import DutyPress, ReportListPage, TeamPress
from bot.services.access.team import MemberView
from bot.services.desk.browse import Found, ListLine, Page, ReportView
from bot.services.desk.stats import WeekCounts
from messages.catalog import Catalogs
from storage.audit import AuditEntry

PAGE_LIMIT = 3500  # characters per message, below Telegram's 4,096 with room for escaping


def team_list(
    texts: Catalogs, language: str, members: Sequence[MemberView], zone: ZoneInfo, *, with_buttons: bool
) -> tuple[str, InlineKeyboardMarkup | None]:
    """Return /team: each member's name, role and since when; Revoke buttons for admins."""
    lines = [texts.text(language, "team.header", count=len(members))]
    buttons = []
    for member in members:
        role = "admin" if "admin" in member.roles else "coordinator"
        name = member.name or texts.plain(language, "team.unnamed", ref=member.ref[:4])
        lines.append(
            texts.text(
                language,
                "team.line",
                name=name,
                role=texts.plain(language, f"team.role_{role}"),
                since=dates.day(member.since, zone),
                ref=member.ref,
            )
            + (" " + texts.text(language, "team.on_duty") if member.on_duty else "")
        )
        if with_buttons and role == "coordinator":
            label = texts.plain(language, "team.revoke_button", name=name)
            buttons.append([InlineKeyboardButton(label, callback_data=TeamPress("rv", member.ref).pack())])
    return "\n".join(lines), InlineKeyboardMarkup(buttons) if buttons else None


def duty_screen(
    texts: Catalogs, language: str, on_duty: bool, count: int
) -> tuple[str, InlineKeyboardMarkup]:
    """Return /duty: whether the person is on duty, how many are, and the button that switches it."""
    key = "duty.on" if on_duty else "duty.off"
    button = "duty.button_off" if on_duty else "duty.button_on"
    target = DutyPress("off" if on_duty else "on")
    keyboard = InlineKeyboardMarkup(
        [[InlineKeyboardButton(texts.plain(language, button), callback_data=target.pack())]]
    )
    return texts.text(language, key, count=count), keyboard


def report_page(
    texts: Catalogs, language: str, page: Page, zone: ZoneInfo, number: int
) -> tuple[str, InlineKeyboardMarkup | None]:
    """Return a page of /reports with a Next button when there is more."""
    if not page.lines:
        return texts.text(language, "desk.list_empty"), None
    lines = [texts.text(language, "desk.list_header", page=number)]
    lines += [report_line(texts, language, line, zone) for line in page.lines]
    keyboard = None
    if page.next_before is not None:
        data = ReportListPage(number + 1, page.next_before, page.token).pack()
        label = texts.plain(language, "desk.next_page")
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=data)]])
    return "\n".join(lines), keyboard


def report_line(texts: Catalogs, language: str, line: ListLine, zone: ZoneInfo) -> str:
    """Return one report as a list line: code, status, category, region, date, assignee."""
    report = line.report
    return texts.text(
        language,
        "desk.line",
        code=report.code,
        status=texts.plain(language, f"status.{report.status}"),
        category=texts.plain(language, f"category.{report.category}"),
        region=texts.plain(language, f"region.{report.region}") if report.region else "—",
        date=dates.moment(report.created_at, zone),
        assignee=line.assignee or "—",
    )


def found_list(
    texts: Catalogs, language: str, hits: Sequence[Found], scanned: int, zone: ZoneInfo
) -> list[str]:
    """Return /find's answer as messages: matching reports with an excerpt each."""
    if not hits:
        return [texts.text(language, "desk.find_none", scanned=scanned)]
    parts = [texts.text(language, "desk.find_header", count=len(hits), scanned=scanned)]
    for hit in hits:
        line = report_line(texts, language, ListLine(hit.report, None), zone)
        parts.append(line + "\n" + texts.text(language, "desk.find_excerpt", excerpt=hit.excerpt))
    return pages(parts)


def report_view(texts: Catalogs, language: str, view: ReportView, zone: ZoneInfo) -> list[str]:
    """Return /r as messages that each fit Telegram's limit: the report, then notes and history."""
    report, body = view.report, view.body
    if report.status == "rejected" and report.reason == "duplicate":
        status = texts.plain(language, "status.duplicate", original=report.duplicate_of or "—")
    else:
        status = texts.plain(language, f"status.{report.status}")
    parts = [
        texts.text(
            language,
            "desk.view",
            code=report.code,
            kind=texts.plain(language, f"category.{report.category}"),
            status=status,
            assignee=view.assignee or "—",
            acknowledged=view.acknowledged_by or "—",
            created=dates.moment(report.created_at, zone),
            occurred=(
                dates.occurred(report.occurred_at, zone, report.occurred_precision)
                if report.occurred_at
                else "—"
            ),
            region=texts.plain(language, f"region.{report.region}") if report.region else "—",
            place=body.place or "—",
            location=f"{body.location[0]}, {body.location[1]}" if body.location else "—",
            contact=texts.plain(language, "alert.contactable" if report.contactable else "alert.anonymous"),
            evidence=len(view.evidence),
        )
    ]
    if body.text:
        parts.append(texts.text(language, "alert.text", value=body.text))
    if body.people:
        parts.append(texts.text(language, "alert.people", value=body.people))
    for note in view.notes:
        parts.append(
            texts.text(
                language,
                f"desk.note_{note.kind}",
                who=note.author or "—",
                at=dates.moment(note.at, zone),
                text=note.text,
            )
        )
    if view.events:
        history = [
            texts.text(
                language,
                "desk.event",
                at=dates.moment(at, zone),
                who=who,
                action=texts.plain(language, f"desk.action_{action}"),
            )
            for who, action, at in view.events
        ]
        parts.append(texts.text(language, "desk.history") + "\n" + "\n".join(history))
    return pages(parts)


def audit_list(texts: Catalogs, language: str, entries: Sequence[AuditEntry], names: dict[str, str]) -> str:
    """Return /audit: the newest entries, newest first, actors by display name or short reference."""
    if not entries:
        return texts.text(language, "audit.empty")
    lines = [texts.text(language, "audit.header", count=len(entries))]
    for entry in entries:
        actor = names.get(entry.actor) or (
            entry.actor if entry.actor in ("cli", "system") else f"#{entry.actor[:4]}"
        )
        lines.append(
            texts.text(
                language,
                "audit.line" if entry.outcome == "ok" else "audit.line_refused",
                id=entry.id,
                at=dates.utc_moment(entry.at),
                actor=actor,
                action=entry.action,
                target=entry.target or "",
            )
        )
    return "\n".join(lines)


def stats_caption(texts: Catalogs, language: str, counts: WeekCounts) -> str:
    """Return the chart's caption: totals by category and open vs closed (under 1,024 characters)."""
    parts = [
        texts.plain(language, "stats.caption_total", total=counts.total, weeks=len(counts.weeks)),
    ]
    by_category = sorted(
        ((sum(series), category) for category, series in counts.by_category.items() if sum(series)),
        reverse=True,
    )
    parts += [f"{texts.plain(language, f'category.{c}')}: {n}" for n, c in by_category]
    parts.append(
        texts.plain(
            language, "stats.caption_open_closed", opened=sum(counts.opened), closed=sum(counts.closed)
        )
    )
    return "\n".join(parts)[:1024]


def pages(parts: Sequence[str], limit: int = PAGE_LIMIT, separator: str = "\n\n") -> list[str]:
    """Join parts into as few messages as fit `limit` UTF-16 units; a longer part is cut at a line break,
    or else before an HTML entity or tag, never inside one."""
    result: list[str] = []
    current = ""
    for part in parts:
        while _units(part) > limit:
            cut = _cut(part, limit)
            if current:
                result.append(current)
                current = ""
            result.append(part[:cut])
            part = part[cut:].lstrip("\n")
        joined = f"{current}{separator}{part}" if current else part
        if current and _units(joined) > limit:
            result.append(current)
            joined = part
        current = joined
    if current:
        result.append(current)
    return result


def _cut(text: str, limit: int) -> int:
    """Return where to cut `text` so the head fits `limit` units."""
    end = limit
    while end > 0 and _units(text[:end]) > limit:
        end -= max(1, (_units(text[:end]) - limit) // 2)
    line = text.rfind("\n", 0, end)
    if line > end // 2:
        return line
    # Back off to before an entity ("&amp;") or a tag that would be split.
    for opener, closer in (("&", ";"), ("<", ">")):
        start = text.rfind(opener, max(0, end - 12 if opener == "&" else end - 200), end)
        if start != -1 and text.find(closer, start, end) == -1:
            end = start
    return max(end, 1)


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2
