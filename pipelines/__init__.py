"""exoray phase pipelines: thin wiring of stages and sinks, one module per phase."""
