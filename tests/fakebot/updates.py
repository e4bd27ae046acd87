"""The update queue: offsets, long polling, allowed_updates, and the webhook: setWebhook with its secret,
and the pushing of each update to the bot's server, sent again until it answers 2xx, as Telegram does."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import re
import time
from typing import Any, Final

import aiohttp

from .state import FakeBotState
from .wire import ApiError, Handler, JSONDict

# Telegram's default when allowed_updates is empty or never set.
_DEFAULT_EXCLUDED_UPDATES: Final = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
_SECRET_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]{1,256}")
# Telegram waits longer between attempts; the fake keeps tests short.
WEBHOOK_RETRY_S: Final = 0.5


def _update_type(update: JSONDict) -> str:
    """Return the payload key of an update, e.g. "message"."""
    for key in update:
        if key != "update_id":
            return key
    return ""


class UpdatesMixin(FakeBotState):
    """Queue updates for getUpdates and hand them out the way Telegram's long polling does."""

    def _setup_state(self) -> None:
        """Start with an empty queue, no webhook and Telegram's default allowed_updates."""
        super()._setup_state()
        self.pending_updates: list[JSONDict] = []
        self.acknowledged_offset = 0
        self.webhook_url: str | None = None
        self.webhook_secret: str | None = None
        # Every push: (update_id, HTTP status or 0 for no answer), in order; what the bot's server said.
        self.webhook_pushes: list[tuple[int, int]] = []
        self.webhook_last_error: str | None = None
        self.webhook_last_error_at = 0
        self.webhook_retry_s = WEBHOOK_RETRY_S
        self._pusher: asyncio.Task[None] | None = None
        self._next_update_id = 1
        self._allowed_updates: frozenset[str] | None = None
        self._poll_generation = 0
        self._callback_ids: set[str] = set()

    def _handlers(self) -> dict[str, Handler]:
        """Answer the polling and webhook methods."""
        return {
            **super()._handlers(),
            "getUpdates": self._get_updates,
            "deleteWebhook": self._delete_webhook,
            "setWebhook": self._set_webhook,
            "getWebhookInfo": self._get_webhook_info,
        }

    def add_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue a raw update for getUpdates, assigning update_id if it has none."""
        update_id = update.get("update_id")
        if not isinstance(update_id, int):
            update_id = self._next_update_id
            update["update_id"] = update_id
        self._next_update_id = max(self._next_update_id, update_id + 1)
        callback = update.get("callback_query")
        if isinstance(callback, dict) and "id" in callback:
            self._callback_ids.add(str(callback["id"]))
        pending = self.pending_updates
        if not pending or pending[-1]["update_id"] < update_id:
            pending.append(update)
        else:
            # Keeping the queue sorted lets offset confirmation cut a prefix instead of filtering.
            bisect.insort(pending, update, key=lambda item: item["update_id"])
        self._updates_signal.notify()
        return update

    async def _get_updates(self, p: JSONDict) -> list[JSONDict]:
        """Long-poll the update queue."""
        if self.webhook_url:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        limit = p.get("limit", 100)
        limit = min(max(limit, 1), 100) if isinstance(limit, int) else 100
        timeout = p.get("timeout", 0)
        try:
            wait = max(float(timeout), 0.0)
        except (TypeError, ValueError):
            wait = 0.0
        allowed = p.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = frozenset(map(str, allowed)) or None
        offset = p.get("offset")
        if isinstance(offset, int):
            self._confirm(offset)

        # Telegram lets only one poller wait; a newer request ends the older one with 409.
        self._poll_generation += 1
        generation = self._poll_generation
        self._updates_signal.notify()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            if generation != self._poll_generation:
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )
            if self.revoked:
                # revoke() notifies the signal, so a waiting poll ends within a wake-up with Telegram's 401.
                raise ApiError(401, "Unauthorized")
            batch = self._select_updates(limit)
            if batch or self._closing.is_set():
                return batch
            remaining = deadline - loop.time()
            if remaining <= 0:
                return batch
            await self._updates_signal.wait(remaining)

    async def wait_for_push(self, *, status: int | None = None, timeout: float = 10.0) -> tuple[int, int]:
        """Wait until the webhook was posted to (and answered `status`, 0 for no answer); return the push."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for push in self.webhook_pushes:
                if status is None or push[1] == status:
                    return push
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"no webhook push answered {status} within {timeout} s: {self.webhook_pushes}"
                )
            await self._calls_signal.wait(remaining)

    async def _stop_concerns(self) -> None:
        """Stop pushing to the webhook."""
        pusher, self._pusher = self._pusher, None
        if pusher is not None and not pusher.done():
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pusher
        await super()._stop_concerns()

    def _confirm(self, offset: int) -> None:
        """Forget updates below `offset`, which the bot thereby confirmed."""
        pending = self.pending_updates
        if offset < 0:
            # A negative offset keeps only the last -offset updates, as documented for getUpdates.
            keep = pending[offset:]
            dropped = len(pending) - len(keep)
            del pending[:dropped]
            if pending:
                self.acknowledged_offset = max(self.acknowledged_offset, pending[0]["update_id"])
            return
        self.acknowledged_offset = max(self.acknowledged_offset, offset)
        cut = bisect.bisect_left(pending, offset, key=lambda item: item["update_id"])
        if cut:
            del pending[:cut]

    def _select_updates(self, limit: int) -> list[JSONDict]:
        """Return up to `limit` pending updates the bot subscribed to."""
        allowed = self._allowed_updates
        batch: list[JSONDict] = []
        for update in self.pending_updates:
            kind = _update_type(update)
            if (kind in allowed) if allowed is not None else (kind not in _DEFAULT_EXCLUDED_UPDATES):
                batch.append(update)
                if len(batch) >= limit:
                    break
        return batch

    async def _delete_webhook(self, p: JSONDict) -> bool:
        """Remove the webhook, optionally dropping the queue."""
        self.webhook_url = None
        self.webhook_secret = None
        if p.get("drop_pending_updates"):
            self.pending_updates.clear()
        return True

    async def _set_webhook(self, p: JSONDict) -> bool:
        """Store the webhook URL and secret and start pushing; an empty URL removes it.

        Unlike Telegram's cloud, which posts to https on ports 443, 80, 88 and 8443 only, the fake posts to
        any http(s) URL, as a local Bot API server does: the bot's server runs on 127.0.0.1 here."""
        url = p.get("url")
        if url and not re.match(r"^https?://[^/\s]+", str(url)):
            raise ApiError(400, "Bad Request: bad webhook: invalid URL")
        secret = p.get("secret_token")
        if secret is not None and not _SECRET_TOKEN.fullmatch(str(secret)):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        self.webhook_url = str(url) if url else None
        self.webhook_secret = str(secret) if secret else None
        if p.get("drop_pending_updates"):
            self.pending_updates.clear()
        allowed = p.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = frozenset(map(str, allowed)) or None
        if self.webhook_url and (self._pusher is None or self._pusher.done()):
            self._pusher = asyncio.create_task(self._push_updates(), name="fake-webhook-pusher")
        self._updates_signal.notify()
        return True

    async def _push_updates(self) -> None:
        """Post each pending update to the webhook in order; drop it once answered 2xx, else try again."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            while self.webhook_url and not self._closing.is_set():
                # Telegram delivers nothing to a revoked bot; restore() notifies the signal to resume.
                batch = [] if self.revoked else self._select_updates(1)
                if not batch:
                    await self._updates_signal.wait(1.0)
                    continue
                update = batch[0]
                headers = (
                    {"X-Telegram-Bot-Api-Secret-Token": self.webhook_secret} if self.webhook_secret else {}
                )
                status = 0
                try:
                    async with session.post(self.webhook_url, json=update, headers=headers) as response:
                        status = response.status
                except (aiohttp.ClientError, TimeoutError) as error:
                    self.webhook_last_error = f"Connection failed: {type(error).__name__}"
                self.webhook_pushes.append((update["update_id"], status))
                self._calls_signal.notify()
                if 200 <= status < 300:
                    self.pending_updates.remove(update)
                    self.acknowledged_offset = max(self.acknowledged_offset, update["update_id"] + 1)
                    continue
                if status:
                    self.webhook_last_error = f"Wrong response from the webhook: {status}"
                self.webhook_last_error_at = int(time.time())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.webhook_retry_s):
                        await self._closing.wait()

    async def _get_webhook_info(self, p: JSONDict) -> JSONDict:
        """Describe the webhook state."""
        info: JSONDict = {
            "url": self.webhook_url or "",
            "has_custom_certificate": False,
            "pending_update_count": len(self.pending_updates),
        }
        if self.webhook_url and self.webhook_last_error:
            info["last_error_date"] = self.webhook_last_error_at
            info["last_error_message"] = self.webhook_last_error
        if self._allowed_updates is not None:
            info["allowed_updates"] = sorted(self._allowed_updates)
        return info
