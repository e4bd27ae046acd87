"""Pure rules and vocabulary shared by every layer: no I/O, no Telegram, no database."""
