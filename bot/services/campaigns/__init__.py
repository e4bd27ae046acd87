"""Campaigns: subscriptions, composing and approving a call to action, and the broadcaster."""
