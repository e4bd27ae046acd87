"""The typed callback context: handlers reach services and texts through it, never through bot_data keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from telegram.ext import Application, CallbackContext, ExtBot

from bot.runtime.clock import Clock
from bot.runtime.ratelimit import SendLimiter
from bot.services.access.users import Profile
from bot.settings import Settings
from bot.wiring import Services
from messages import Catalogs, catalogs


@dataclass
class BotData:
    """Application-wide state; `services` is set in post_init and cleared in post_shutdown."""

    settings: Settings
    clock: Clock
    limiter: SendLimiter
    services: Services | None = None
    # Update ids whose handler hit a transient fault; the inbox keeps those for another try.
    retry_marks: dict[int, str] = field(default_factory=dict)


class JarchyContext(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], BotData]):
    """CallbackContext with the services, the caller's profile and a text renderer."""

    def __init__(
        self,
        application: Application[Any, Any, Any, Any, Any, Any],
        chat_id: int | None = None,
        user_id: int | None = None,
    ) -> None:
        super().__init__(application=application, chat_id=chat_id, user_id=user_id)
        self.profile: Profile | None = None

    @property
    def services(self) -> Services:
        """Return the running services."""
        services = self.bot_data.services
        if services is None:
            raise RuntimeError("services are not open (post_init has not run)")
        return services

    @property
    def language(self) -> str:
        """Return the language to answer in."""
        if self.profile is not None:
            return self.profile.language
        return self.bot_data.settings.default_language

    @property
    def texts(self) -> Catalogs:
        """Return the message catalogs."""
        return catalogs()

    def text(self, key: str, /, **params: object) -> str:
        """Render a text in the caller's language, as HTML (parameters escaped)."""
        return catalogs().text(self.language, key, **params)

    def plain(self, key: str, /, **params: object) -> str:
        """Render a text in the caller's language for places that show text as it is (button answers)."""
        return catalogs().plain(self.language, key, **params)


# The Application as built in bot.app, for the handlers' register(app).
JarchyApp = Application[Any, JarchyContext, dict[Any, Any], dict[Any, Any], Any, Any]
