"""Domain services: plain async code over storage, no Telegram types."""
