"""Who may do what: roles checked at the moment of use, the team, the coordinators' group and users."""
