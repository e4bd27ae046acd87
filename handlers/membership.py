"""Who joins the coordinators' group: Telegram's chat_member updates (sent to bots that administer it)."""

from __future__ import annotations

from telegram import ChatMember, ChatMemberRestricted, Update, User
from telegram.ext import ChatMemberHandler

from bot.context import JarchyApp, JarchyContext

_INSIDE = frozenset({ChatMember.OWNER, ChatMember.ADMINISTRATOR, ChatMember.MEMBER})
_ADMINISTRATORS = frozenset({ChatMember.OWNER, ChatMember.ADMINISTRATOR})


async def watch_members(update: Update, context: JarchyContext) -> None:
    """Someone came into a group (or was made an administrator there): the members service decides whether
    it is the coordinators' group and whether they belong in it."""
    change = update.chat_member
    if change is None:
        return
    old, new = change.old_chat_member, change.new_chat_member
    if not _inside(new):
        return  # left, removed, or banned: nobody more reads the alerts
    promoted = new.status in _ADMINISTRATORS and old.status not in _ADMINISTRATORS
    if _inside(old) and not promoted:
        return  # a change of rights of someone who was there already
    person = new.user
    await context.services.members.arrived(change.chat.id, person.id, _who(person), update.update_id)


def _inside(member: ChatMember) -> bool:
    if isinstance(member, ChatMemberRestricted):
        return member.is_member
    return member.status in _INSIDE


def _who(user: User) -> str:
    # As Telegram names them, for the admins' notice only; nothing of it is stored.
    return " ".join(part for part in (user.full_name, f"@{user.username}" if user.username else "") if part)


def register(app: JarchyApp) -> None:
    """Watch the members of the groups the bot administers."""
    app.add_handler(ChatMemberHandler(watch_members, ChatMemberHandler.CHAT_MEMBER))
