"""Files: uploads the bot sends, files the test stores, getFile and what the download route serves."""

from __future__ import annotations

import itertools
import mimetypes
from pathlib import Path
from typing import Any, Final

from .state import FakeBotState
from .wire import Handler, JSONDict, StoredFile, UploadedFile, bad

_MAX_DOWNLOAD: Final = 20 * 1024 * 1024
_FILE_FOLDERS: Final = {
    "photo": "photos",
    "document": "documents",
    "video": "videos",
    "voice": "voice",
    "audio": "music",
}


class FilesMixin(FakeBotState):
    """Store files under Telegram-like file_ids and file_paths."""

    def _setup_state(self) -> None:
        """Start with no files."""
        super()._setup_state()
        self.files: dict[str, StoredFile] = {}
        self._files_by_path: dict[str, StoredFile] = {}
        self._file_counter = itertools.count(1)
        # Set to a folder to act as a local-mode Bot API server (telegram-bot-api --local): getFile writes
        # the file there and answers with its absolute path, for files of any size.
        self.local_dir: Path | None = None

    def _handlers(self) -> dict[str, Handler]:
        """Answer getFile."""
        return {**super()._handlers(), "getFile": self._get_file}

    def add_file(self, content: bytes, *, file_name: str = "file.bin") -> str:
        """Store bytes as a Telegram file and return its file_id."""
        return self._store_file(content, file_name, None, "document").file_id

    def _store_file(self, content: bytes, file_name: str, mime_type: str | None, kind: str) -> StoredFile:
        """Register bytes under a fresh file_id and file_path."""
        number = next(self._file_counter)
        suffix = ""
        dot = file_name.rfind(".")
        if dot > 0:
            suffix = file_name[dot:]
        stored = StoredFile(
            file_id=f"FAKE-{kind}-{number:06d}",
            file_unique_id=f"U{number:06d}",
            file_path=f"{_FILE_FOLDERS.get(kind, 'documents')}/file_{number}{suffix}",
            file_name=file_name,
            mime_type=mime_type or mimetypes.guess_type(file_name)[0],
            content=content,
        )
        self.files[stored.file_id] = stored
        self._files_by_path[stored.file_path] = stored
        return stored

    def _lookup_file(self, file_id: str) -> StoredFile:
        """Return a stored file, or an unregistered stand-in for ids the test made up."""
        stored = self.files.get(file_id)
        if stored is not None:
            return stored
        return StoredFile(file_id, f"U-{file_id}"[:32], "", "file", None, b"")

    def _file_param(self, value: Any, kind: str) -> StoredFile:
        """Turn an uploaded file, URL or file_id parameter into a file record."""
        if isinstance(value, UploadedFile):
            name = value.filename or f"{kind}.bin"
            mime = value.content_type if value.content_type != "application/octet-stream" else None
            return self._store_file(value.content, name, mime, kind)
        if not isinstance(value, str) or not value:
            raise bad(f"there is no {kind} in the request")
        if value.startswith(("http://", "https://")):
            # Telegram would fetch the URL; the fake cannot, so the file exists but is empty.
            name = value.rsplit("/", 1)[-1] or f"{kind}.bin"
            return self._store_file(b"", name, None, kind)
        return self._lookup_file(value)

    @staticmethod
    def _media_object(kind: str, stored: StoredFile, p: JSONDict) -> Any:
        """Build the PhotoSize list / Document / Video / Voice / Audio object for a message."""
        base: JSONDict = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id}
        if stored.content:
            base["file_size"] = len(stored.content)
        if kind == "photo":
            # Telegram always offers several sizes; bots usually take the last (largest) one.
            return [{**base, "width": 90, "height": 90}, {**base, "width": 1280, "height": 720}]
        duration = p.get("duration")
        duration = duration if isinstance(duration, int) else 1
        if kind == "video":
            return {**base, "width": 1280, "height": 720, "duration": duration, "mime_type": "video/mp4"}
        if kind == "voice":
            return {**base, "duration": duration, "mime_type": "audio/ogg"}
        obj = {**base, "file_name": stored.file_name}
        if stored.mime_type:
            obj["mime_type"] = stored.mime_type
        if kind == "audio":
            obj["duration"] = duration
        return obj

    async def _get_file(self, p: JSONDict) -> JSONDict:
        """Describe a stored file and where to download it."""
        stored = self.files.get(str(p.get("file_id", "")))
        if stored is None:
            raise bad("invalid file_id")
        if self.local_dir is None and len(stored.content) > _MAX_DOWNLOAD:
            raise bad("file is too big")
        file_path = stored.file_path
        if self.local_dir is not None:
            local = self.local_dir / stored.file_path
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(stored.content)
            file_path = str(local.resolve())
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.content),
            "file_path": file_path,
        }
