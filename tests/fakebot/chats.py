"""Chats and their members: migration, kicking and restoring the bot, member lists, bans, admin rights."""

from __future__ import annotations

import time
from typing import Any, Final

from .updates import UpdatesMixin
from .wire import ApiError, Handler, JSONDict, bad

# Statuses kick_bot and restore_bot move the bot between.
_BOT_REMOVED_STATUSES: Final = frozenset({"kicked", "left", "restricted"})
_BOT_PRESENT_STATUSES: Final = frozenset({"administrator", "member"})
# ChatMember statuses a user can be given in a chat's member list, and those that make them a member.
_MEMBER_STATUSES: Final = frozenset({"creator", "administrator", "member", "restricted", "left", "kicked"})
_INSIDE_STATUSES: Final = frozenset({"creator", "administrator", "member", "restricted"})
_NO_RESTRICT_RIGHTS: Final = "not enough rights to restrict/unrestrict chat member"
_ADMIN_RIGHTS: Final = (
    "can_manage_chat",
    "can_delete_messages",
    "can_manage_video_chats",
    "can_restrict_members",
    "can_change_info",
    "can_invite_users",
    "can_post_stories",
    "can_edit_stories",
    "can_delete_stories",
)
_MEMBER_PERMISSIONS: Final = (
    "can_change_info",
    "can_invite_users",
    "can_pin_messages",
    "can_send_messages",
    "can_send_polls",
    "can_send_other_messages",
    "can_add_web_page_previews",
    "can_manage_topics",
    "can_send_audios",
    "can_send_documents",
    "can_send_photos",
    "can_send_videos",
    "can_send_video_notes",
    "can_send_voice_notes",
    "can_edit_tag",
    "can_react_to_messages",
)


class ChatsMixin(UpdatesMixin):
    """Keep each chat's life cycle and member list, and refuse writes the way Telegram does."""

    def _setup_state(self) -> None:
        """Start with every chat open, the bot administering it and everyone else a member."""
        super()._setup_state()
        self.forbidden_chats: set[int] = set()
        self.left_chats: set[int] = set()
        # (chat_id, user_id) -> ChatMember status; the bot is "administrator" and everyone else
        # "member" unless overridden here.
        self.chat_member_statuses: dict[tuple[int, int], str] = {}
        # (chat_id, user_id) -> administrator rights that differ from "all granted" (set_admin_rights).
        self.admin_rights: dict[tuple[int, int], dict[str, bool]] = {}
        # Chats whose member list the test keeps (add_chat_member): anyone not in it has "left".
        self._member_lists: set[int] = set()
        self._ban_until: dict[tuple[int, int], int] = {}
        self._migrations: dict[int, int] = {}
        self._deleted_chats: set[int] = set()
        # chat_id -> the status kick_bot gave the bot there, while it stops the bot's writes.
        self._bot_removals: dict[int, str] = {}
        # Users who wrote to the bot in their private chat (add_message, add_callback_query, mark_started):
        # with require_start only these may be written to, as Telegram lets no bot write first.
        self.started_users: set[int] = set()

    def _handlers(self) -> dict[str, Handler]:
        """Answer the chat and member methods."""
        return {
            **super()._handlers(),
            "getChat": self._get_chat,
            "getChatMember": self._get_chat_member,
            "getChatMemberCount": self._get_chat_member_count,
            "banChatMember": self._ban_chat_member,
            "unbanChatMember": self._unban_chat_member,
            "leaveChat": self._leave_chat,
        }

    # ------------------------------------------------------------------ chat life cycle

    def migrate_chat(self, old_chat_id: int, new_chat_id: int, *, by_user_id: int = 1) -> None:
        """Upgrade a group to a supergroup: writes to the old id fail with migrate_to_chat_id.

        Queues the two service messages Telegram sends, migrate_to_chat_id in the old group and
        migrate_from_chat_id in the new supergroup.
        """
        old_chat = self._chat(old_chat_id)
        title = old_chat.get("title") or f"Test supergroup {abs(new_chat_id)}"
        new_chat: JSONDict = {"id": new_chat_id, "type": "supergroup", "title": title}
        self._chats[new_chat_id] = new_chat
        self._migrations[old_chat_id] = new_chat_id
        user = self._user(by_user_id)
        farewell = self._new_message(old_chat, user)
        farewell["migrate_to_chat_id"] = new_chat_id
        self.add_update({"message": dict(farewell)})
        welcome = self._new_message(new_chat, user)
        welcome["migrate_from_chat_id"] = old_chat_id
        self.add_update({"message": dict(welcome)})

    def kick_bot(self, chat_id: int, *, by_user_id: int = 1, status: str = "kicked") -> dict[str, Any]:
        """Remove ("kicked", "left") or restrict ("restricted") the bot in a chat; return the update.

        Writes into the chat then fail like Telegram's (403 for kicked/left, 400 for restricted),
        getChatMember reports the new status, and a my_chat_member update is queued. In a private
        chat this is the user blocking the bot, so `from` is that user whatever `by_user_id` says.
        """
        if status not in _BOT_REMOVED_STATUSES:
            raise ValueError(f"status must be one of {sorted(_BOT_REMOVED_STATUSES)}, not {status!r}")
        update = self._bot_status_change(chat_id, by_user_id, status)
        self._bot_removals[chat_id] = status
        return update

    def restore_bot(
        self, chat_id: int, *, by_user_id: int = 1, status: str = "administrator"
    ) -> dict[str, Any]:
        """Undo kick_bot: the bot becomes `status` again ("member" in private chats); return the update."""
        if status not in _BOT_PRESENT_STATUSES:
            raise ValueError(f"status must be one of {sorted(_BOT_PRESENT_STATUSES)}, not {status!r}")
        update = self._bot_status_change(chat_id, by_user_id, status)
        self._bot_removals.pop(chat_id, None)
        return update

    def mark_started(self, user_id: int) -> None:
        """Record that a user has started the bot (sent it /start), so require_start lets it write to them."""
        self.started_users.add(user_id)

    def delete_chat(self, chat_id: int) -> None:
        """Make the chat vanish: writes, getChat and getChatMember answer "chat not found"."""
        self._deleted_chats.add(chat_id)

    # ------------------------------------------------------------------ a group's members

    def add_chat_member(
        self,
        chat_id: int,
        user_id: int,
        status: str = "member",
        *,
        by_user_id: int | None = None,
        first_name: str = "Test",
        username: str | None = None,
        update: bool = True,
    ) -> dict[str, Any] | None:
        """Give a user `status` in a group's member list ("member", "administrator", "creator",
        "restricted"; "left" or "kicked" take them out) and return the chat_member update Telegram sends.

        From the first call on, the chat's member list is the fake's: getChatMember answers "left" for
        anyone not in it and getChatMemberCount counts it (the bot included). Telegram sends chat_member
        updates only to a bot that administers the chat, so there is none otherwise (None is returned),
        nor with `update=False` (someone who joined before the bot could see it). `by_user_id` made the
        change (default: the user, joining by link).
        """
        if status not in _MEMBER_STATUSES:
            raise ValueError(f"status must be one of {sorted(_MEMBER_STATUSES)}, not {status!r}")
        if user_id == self.bot_id:
            raise ValueError("the bot's own status changes with kick_bot and restore_bot")
        known = self._users.get(user_id)
        if known is None or known.get("first_name") != first_name or known.get("username") != username:
            self._remember_user(user_id, first_name, username, (known or {}).get("language_code"))
        self._member_lists.add(chat_id)
        return self._member_change(chat_id, user_id, status, by_user_id or user_id, update=update)

    def set_admin_rights(self, chat_id: int, user_id: int | None = None, **rights: bool) -> None:
        """Change an administrator's rights in a chat (the bot's by default), e.g. can_restrict_members=False
        for an administrator who may not ban users."""
        unknown = set(rights) - set(_ADMIN_RIGHTS) - {"can_promote_members"}
        if unknown:
            raise ValueError(f"unknown administrator rights: {sorted(unknown)}")
        key = (chat_id, self.bot_id if user_id is None else user_id)
        self.admin_rights[key] = {**self.admin_rights.get(key, {}), **rights}

    def chat_members(self, chat_id: int) -> dict[int, str]:
        """Return the statuses in a chat's member list, the bot's included (kicked and left too)."""
        members = {
            user: status for (chat, user), status in self.chat_member_statuses.items() if chat == chat_id
        }
        members.setdefault(self.bot_id, self._status_in(chat_id, self.bot_id))
        return members

    def _write_chat(self, p: JSONDict) -> int:
        """Resolve the chat a method writes into, enforcing refusals and the chat's state.

        Sending, copying, forwarding, editing and chat actions come here; deleting and banning use
        _writable_chat_id alone, so require_start does not touch them (a chat the bot never wrote in has
        nothing to delete, and private chats have nobody to ban).
        """
        chat_id = self._writable_chat_id(p.get("chat_id"))
        if chat_id in self.forbidden_chats:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        # Positive ids are users' private chats; Telegram refuses a bot's first word in one.
        if self.require_start and chat_id > 0 and chat_id not in self.started_users:
            raise ApiError(403, "Forbidden: bot can't initiate conversation with a user")
        return chat_id

    def _writable_chat_id(self, raw: Any) -> int:
        """Resolve a chat id, failing like Telegram when the chat is gone, migrated or bars the bot."""
        chat_id = self._resolve_chat_id(raw)
        if chat_id in self._deleted_chats:
            raise bad("chat not found")
        migrated_to = self._migrations.get(chat_id)
        if migrated_to is not None:
            raise ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": migrated_to},
            )
        removal = self._bot_removals.get(chat_id)
        if removal is not None:
            raise self._removal_error(chat_id, removal)
        return chat_id

    def _removal_error(self, chat_id: int, status: str) -> ApiError:
        """Word Telegram's refusal of a write by a bot that was removed or restricted."""
        if status == "restricted":
            return bad("not enough rights to send text messages to the chat")
        chat_type = self._chat(chat_id)["type"]
        if chat_type == "private":
            return ApiError(403, "Forbidden: bot was blocked by the user")
        if status == "kicked":
            return ApiError(403, f"Forbidden: bot was kicked from the {chat_type} chat")
        return ApiError(403, f"Forbidden: bot is not a member of the {chat_type} chat")

    def _bot_status_change(self, chat_id: int, by_user_id: int, status: str) -> JSONDict:
        """Move the bot to `status` in a chat and queue the my_chat_member update saying so."""
        chat = self._chat(chat_id)
        key = (chat_id, self.bot_id)
        private = chat["type"] == "private"
        default = "member" if private else "administrator"
        if private and status == "administrator":
            status = "member"  # nobody administers a private chat
        old_member = self._member(self.bot_id, self.chat_member_statuses.get(key, default), chat_id)
        new_member = self._member(self.bot_id, status, chat_id)
        self.chat_member_statuses[key] = status
        change: JSONDict = {
            "chat": chat,
            "from": self._user(chat_id if private else by_user_id),
            "date": int(time.time()),
            "old_chat_member": old_member,
            "new_chat_member": new_member,
        }
        return self.add_update({"my_chat_member": change})

    def _status_in(self, chat_id: int, user_id: int) -> str:
        """Return a user's status in a chat: the bot administers it unless told otherwise, a user not in
        a kept member list has left, anyone else is a member."""
        status = self.chat_member_statuses.get((chat_id, user_id))
        if status is not None:
            return status
        if user_id == self.bot_id:
            return "administrator"
        return "left" if chat_id in self._member_lists else "member"

    def _rights_of(self, chat_id: int, user_id: int) -> dict[str, bool]:
        """Return an administrator's rights: all of them unless set_admin_rights took some away."""
        rights = dict.fromkeys(_ADMIN_RIGHTS, True)
        rights["can_promote_members"] = False
        rights.update(self.admin_rights.get((chat_id, user_id), {}))
        return rights

    def _member_change(
        self, chat_id: int, user_id: int, status: str, by_user_id: int, *, update: bool = True
    ) -> JSONDict | None:
        """Move a user to `status` in a chat; queue the chat_member update if the bot administers it."""
        old = self._status_in(chat_id, user_id)
        self.chat_member_statuses[(chat_id, user_id)] = status
        if status != "kicked":
            self._ban_until.pop((chat_id, user_id), None)
        bot_status = self._status_in(chat_id, self.bot_id)
        if not update or old == status or bot_status not in ("administrator", "creator"):
            return None
        change: JSONDict = {
            "chat": self._chat(chat_id),
            "from": self.bot_user if by_user_id == self.bot_id else self._user(by_user_id),
            "date": int(time.time()),
            "old_chat_member": self._member(user_id, old, chat_id),
            "new_chat_member": self._member(user_id, status, chat_id),
        }
        return self.add_update({"chat_member": change})

    def _may_restrict(self, chat_id: int) -> bool:
        """Tell whether the bot may ban and unban members of a chat."""
        status = self._status_in(chat_id, self.bot_id)
        if status == "creator":
            return True
        return status == "administrator" and self._rights_of(chat_id, self.bot_id)["can_restrict_members"]

    @staticmethod
    def _target_user(p: JSONDict) -> int:
        """Return the user_id parameter of a method about a chat member."""
        user_id = p.get("user_id")
        if isinstance(user_id, bool) or not isinstance(user_id, int):
            raise bad("invalid user_id specified")
        return user_id

    async def _get_chat(self, p: JSONDict) -> JSONDict:
        """Return a ChatFullInfo with the fields PTB requires."""
        chat_id = self._resolve_chat_id(p.get("chat_id"))
        if chat_id in self._deleted_chats:
            raise bad("chat not found")
        chat = self._chat(chat_id)
        return {
            **chat,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }

    async def _get_chat_member(self, p: JSONDict) -> JSONDict:
        """Return a ChatMember; the bot is an administrator unless chat_member_statuses says otherwise."""
        chat_id = self._resolve_chat_id(p.get("chat_id"))
        if chat_id in self._deleted_chats:
            raise bad("chat not found")
        user_id = p.get("user_id")
        if not isinstance(user_id, int):
            raise bad("user not found")
        return self._member(user_id, self._status_in(chat_id, user_id), chat_id)

    async def _get_chat_member_count(self, p: JSONDict) -> int:
        """Count a chat's members (the bot among them): those the test put in its member list."""
        chat_id = self._resolve_chat_id(p.get("chat_id"))
        if chat_id in self._deleted_chats:
            raise bad("chat not found")
        if self._chat(chat_id)["type"] == "private":
            return 2
        removal = self._bot_removals.get(chat_id)
        if removal in ("kicked", "left"):
            raise self._removal_error(chat_id, removal)
        return sum(status in _INSIDE_STATUSES for status in self.chat_members(chat_id).values())

    async def _ban_chat_member(self, p: JSONDict) -> bool:
        """Remove a user from a group like Telegram: a supergroup keeps them banned (until unbanned or
        until_date), a basic group just removes them; owners and administrators cannot be removed."""
        chat_id = self._writable_chat_id(p.get("chat_id"))
        user_id = self._target_user(p)
        chat_type = self._chat(chat_id)["type"]
        if chat_type == "private":
            raise bad("can't ban members in private chats")
        basic = chat_type == "group"
        if user_id == self.bot_id:
            raise bad("can't restrict self")
        if not self._may_restrict(chat_id):
            raise bad("CHAT_ADMIN_REQUIRED" if basic else _NO_RESTRICT_RIGHTS)
        old = self._status_in(chat_id, user_id)
        if old == "creator":
            raise bad("can't remove chat owner")
        if old == "administrator":
            raise bad("user is an administrator of the chat")
        if basic:
            if old not in _INSIDE_STATUSES:
                raise bad("USER_NOT_PARTICIPANT")
            self._member_change(chat_id, user_id, "left", self.bot_id)  # no list of removed users there
            return True
        self._member_change(chat_id, user_id, "kicked", self.bot_id)
        until = p.get("until_date")
        if isinstance(until, int) and until > 0:
            self._ban_until[(chat_id, user_id)] = until
        return True

    async def _unban_chat_member(self, p: JSONDict) -> bool:
        """Lift a ban in a supergroup or channel; without only_if_banned a member is removed as well."""
        chat_id = self._writable_chat_id(p.get("chat_id"))
        user_id = self._target_user(p)
        if self._chat(chat_id)["type"] not in ("supergroup", "channel"):
            raise bad("method is available for supergroup and channel chats only")
        old = self._status_in(chat_id, user_id)
        if p.get("only_if_banned") is True and old != "kicked":
            return True  # Telegram looks first and does nothing, whatever the bot's rights
        if user_id == self.bot_id:
            raise bad("can't unrestrict self")
        if not self._may_restrict(chat_id):
            raise bad(_NO_RESTRICT_RIGHTS)
        if old == "creator":
            raise bad("can't remove chat owner")
        if old == "administrator":
            raise bad("user is an administrator of the chat")
        if old != "left":
            self._member_change(chat_id, user_id, "left", self.bot_id)
        return True

    def _member(self, user_id: int, status: str, chat_id: int | None = None) -> JSONDict:
        """Build the ChatMember object of `status` with the fields PTB requires for it."""
        user = self.bot_user if user_id == self.bot_id else self._user(user_id)
        member: JSONDict = {"status": status, "user": user}
        if status == "creator":
            member["is_anonymous"] = False
        elif status == "administrator":
            member.update(can_be_edited=False, is_anonymous=False)
            if chat_id is None:
                member["can_promote_members"] = False
                member.update(dict.fromkeys(_ADMIN_RIGHTS, True))
            else:
                member.update(self._rights_of(chat_id, user_id))
        elif status == "restricted":
            member["is_member"] = True
            member["until_date"] = 0
            member.update(dict.fromkeys(_MEMBER_PERMISSIONS, False))
        elif status == "kicked":
            member["until_date"] = 0 if chat_id is None else self._ban_until.get((chat_id, user_id), 0)
        return member

    async def _leave_chat(self, p: JSONDict) -> bool:
        """Record that the bot left a chat."""
        self.left_chats.add(self._resolve_chat_id(p.get("chat_id")))
        return True
