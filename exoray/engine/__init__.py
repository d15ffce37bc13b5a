"""The phase engine: phase specs, the one Ray Data runner, the part sink, completion, run log."""
