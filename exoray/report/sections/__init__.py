"""One module per report section; each returns a section dict (or None when it has nothing
to show yet) built from what the phases wrote, read through the phases' own readers."""
