"""Local stand-in for the Telegram Bot API, for end-to-end tests and benchmarks."""

from .server import RATE_LIMITED_METHODS, ApiCall, FakeBotApi, StoredFile, UploadedFile

__all__ = ["RATE_LIMITED_METHODS", "ApiCall", "FakeBotApi", "StoredFile", "UploadedFile"]
