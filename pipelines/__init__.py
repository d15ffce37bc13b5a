"""exoray phase pipelines: one module per phase. A module with a ``SPEC`` (an
:class:`exoray.engine.spec.PhaseSpec`) is a Ray Data phase the engine runs, resumes and counts."""

# Display order in `exoray status` and the CLI; a new phase module is found without being listed.
PHASE_ORDER = ("features", "embed", "stratify", "detect", "ocr", "depth", "sam", "interpret")
