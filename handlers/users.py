"""Recognise the person behind every update before any feature handler runs."""

from __future__ import annotations

from telegram import Update
from telegram.ext import Application, TypeHandler

from bot.context import JarchyContext

GROUP = -10


async def recognise_user(update: Update, context: JarchyContext) -> None:
    """Record the sender by pseudonym and put their profile on the context."""
    user = update.effective_user
    if user is None or user.is_bot:
        return
    context.profile = await context.services.users.seen(user.id, user.language_code)


def register(app: Application) -> None:
    """Run recognise_user first for every update."""
    app.add_handler(TypeHandler(Update, recognise_user), group=GROUP)
