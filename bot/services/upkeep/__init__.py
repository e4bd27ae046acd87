"""Keeping a seized server poor: retention, ending history, and rotating the data key."""
