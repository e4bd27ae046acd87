"""Court cases and hearings, their followers and reminders."""
