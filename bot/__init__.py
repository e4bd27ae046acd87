"""jarchy: a Telegram bot for rapid alerts and advocacy by human-rights groups."""
