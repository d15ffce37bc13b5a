"""The one list of phases: every ``pipelines/<module>.py`` that declares a ``SPEC``.

Discovery is by module, so adding a phase is adding its spec file; the CLI, status, errors,
doctor and the demo all iterate over :func:`phase_specs`.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from exoray.engine.spec import PhaseSpec


@lru_cache(maxsize=1)
def phase_specs() -> tuple[PhaseSpec, ...]:
    """Specs of all phases, in the order ``pipelines.PHASE_ORDER`` gives (others after)."""
    import pipelines

    specs = {}
    for info in pkgutil.iter_modules(pipelines.__path__):
        module = importlib.import_module(f"pipelines.{info.name}")
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, PhaseSpec):
            specs[spec.name] = spec
    order = list(getattr(pipelines, "PHASE_ORDER", ()))
    return tuple(sorted(specs.values(),
                        key=lambda s: (order.index(s.name) if s.name in order else len(order),
                                       s.name)))


def get_phase(name: str) -> PhaseSpec:
    for spec in phase_specs():
        if spec.name == name:
            return spec
    raise ValueError(f"unknown phase {name!r}; valid phases: {', '.join(phase_names())}")


def phase_names() -> list[str]:
    return [s.name for s in phase_specs()]
