"""Thin Telegram glue: parse the update, call a service, render a text from messages/, reply."""
