"""Phase VI prompt registry: the prompts of ``BASE/prompts/prompt_registry.yaml``, checked, hashed
and versioned, and the parsers that turn a model's answer into each prompt's output type.

Pure Python plus PyYAML (no torch, no Ray):

* :func:`load_registry` reads (or creates from ``starter.yaml``) and checks the registry;
* :attr:`Prompt.hash` fingerprints what the model sees and how its answer is read;
* :func:`check_versions` / :func:`version_problems` catch a prompt edited without a version bump;
* :func:`parse_output` turns a raw answer into ``(value, error)``.
"""

from exoray.prompts.parsers import OUTPUT_TYPES, parse_output, parse_value
from exoray.prompts.registry import (
    GENERATION_KEYS,
    KEYS,
    PROMPTS_FILE,
    TASKS,
    Prompt,
    PromptError,
    Registry,
    check_versions,
    load_registry,
    parse_registry,
    starter_text,
    version_problems,
)

__all__ = [
    "GENERATION_KEYS",
    "KEYS",
    "OUTPUT_TYPES",
    "PROMPTS_FILE",
    "TASKS",
    "Prompt",
    "PromptError",
    "Registry",
    "check_versions",
    "load_registry",
    "parse_output",
    "parse_registry",
    "parse_value",
    "starter_text",
    "version_problems",
]
