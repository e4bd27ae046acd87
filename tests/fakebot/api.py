"""FakeBotApi: one server made of the concerns, each in its own module."""

from __future__ import annotations

from .activity import ActivityMixin
from .commands import CommandsMixin
from .server import ServerCore


class FakeBotApi(ServerCore, ActivityMixin, CommandsMixin):
    """Local aiohttp server that answers Bot API calls like Telegram and records them.

    ServerCore serves HTTP and applies limits and faults (limits.py); ActivityMixin injects what people do
    and brings messages.py, chats.py, updates.py and files.py with it; CommandsMixin keeps command lists.
    """
