"""The coordinators' desk: lists and views of reports, notes, search, the week's stats and exports."""
