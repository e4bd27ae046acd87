"""Triage: alerts to the coordinators' chat, the card's buttons, the budget planner,
the chat watch and duty."""
