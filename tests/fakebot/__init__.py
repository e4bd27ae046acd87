"""Local stand-in for the Telegram Bot API, for end-to-end tests and benchmarks."""

from .api import FakeBotApi
from .wire import RATE_LIMITED_METHODS, ApiCall, StoredFile, UploadedFile

__all__ = ["RATE_LIMITED_METHODS", "ApiCall", "FakeBotApi", "StoredFile", "UploadedFile"]
