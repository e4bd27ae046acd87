"""The bot's command lists: setMyCommands, getMyCommands and deleteMyCommands per scope and language."""

from __future__ import annotations

import re
from typing import Any, Final

from .state import FakeBotState
from .wire import Handler, JSONDict, bad

_COMMAND_NAME_RE: Final = re.compile(r"[a-z0-9_]{1,32}")


def _scope_key(scope: Any) -> str:
    """Flatten a BotCommandScope into a stable dictionary key."""
    if not isinstance(scope, dict):
        return "default"
    parts = [str(scope.get("type", "default"))]
    parts.extend(str(scope[name]) for name in ("chat_id", "user_id") if name in scope)
    return ":".join(parts)


class CommandsMixin(FakeBotState):
    """Keep the command lists the bot sets, per scope and language."""

    def _setup_state(self) -> None:
        """Start with no commands anywhere."""
        super()._setup_state()
        self.my_commands: dict[str | None, list[JSONDict]] = {}
        self.my_commands_by_scope: dict[tuple[str, str | None], list[JSONDict]] = {}

    def _handlers(self) -> dict[str, Handler]:
        """Answer the command-list methods."""
        return {
            **super()._handlers(),
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
        }

    @staticmethod
    def _language(p: JSONDict) -> str | None:
        """Return the language_code parameter, treating "" as the default language."""
        code = p.get("language_code")
        return str(code) if code else None

    async def _set_my_commands(self, p: JSONDict) -> bool:
        """Store the command list for a scope and language."""
        commands = p.get("commands")
        if not isinstance(commands, list):
            raise bad("can't parse commands JSON object")
        if len(commands) > 100:
            raise bad("BOT_COMMANDS_TOO_MUCH")
        for command in commands:
            if (
                not isinstance(command, dict)
                or not _COMMAND_NAME_RE.fullmatch(str(command.get("command", "")))
                or not 1 <= len(str(command.get("description", ""))) <= 256
            ):
                raise bad("BOT_COMMAND_INVALID")
        language = self._language(p)
        scope = _scope_key(p.get("scope"))
        if not commands:
            # Telegram treats an empty list as deleting the commands.
            return await self._delete_my_commands(p)
        self.my_commands_by_scope[(scope, language)] = commands
        if scope == "default":
            self.my_commands[language] = commands
        return True

    async def _get_my_commands(self, p: JSONDict) -> list[JSONDict]:
        """Return the commands stored for exactly this scope and language."""
        return self.my_commands_by_scope.get((_scope_key(p.get("scope")), self._language(p)), [])

    async def _delete_my_commands(self, p: JSONDict) -> bool:
        """Forget the commands of a scope and language."""
        language = self._language(p)
        scope = _scope_key(p.get("scope"))
        self.my_commands_by_scope.pop((scope, language), None)
        if scope == "default":
            self.my_commands.pop(language, None)
        return True
