"""A phase is a spec: outputs with schemas and keys, options with defaults, and its stages.

``pipelines/<phase>.py`` declares one :class:`PhaseSpec`; the runner, ``todo``, progress, the run
log, ``exoray status``, ``exoray errors --phase``, ``exoray doctor``, the CLI sub-command and the
demo all read it. Adding a phase (or a Phase V task) is one spec file plus its stage/model files.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from exoray.engine.schemas import IMAGE_KEY
from exoray.storage.store import Store


@dataclass(frozen=True)
class Output:
    """One kind of output folder: its parquet schema and the key readers deduplicate by."""

    name: str
    schema: pa.Schema
    key: tuple[str, ...] = IMAGE_KEY
    # (column, current value) for outputs whose definition is versioned: rows of another value
    # (or from before the column existed) are out of date, so not done, and rows written again
    # by a later run supersede them (doctor does not call them duplicates).
    version: tuple[str, int] | None = None


@dataclass(frozen=True)
class Target:
    """One concrete output folder of a run, e.g. the embeddings of one model id.

    The stage's rows carry this target's columns under ``prefix`` (``clip.vector``) and a
    ``need_<label>`` flag; ``convert`` (a module-level function, so it pickles into Ray workers)
    turns them into the output schema when simple renaming is not enough.
    """

    label: str
    folder: str
    output: Output
    prefix: str = ""
    model_id: str | None = None
    convert: Callable[[pa.Table, Target], pa.Table] | None = None
    info: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def need_column(self) -> str:
        return f"need_{self.label}"


@dataclass(frozen=True)
class Option:
    """A phase option: Python keyword, CLI flag, default and help come from one place."""

    name: str
    default: Any
    help: str
    type: Callable[[str], Any] | None = None
    repeat: bool = False
    flag: bool = False
    choices: Sequence[str] | None = None
    metavar: str | None = None

    @property
    def cli(self) -> str:
        return "--" + self.name.replace("_", "-")

    def add_to(self, parser: argparse.ArgumentParser, cli_name: str | None = None) -> None:
        kwargs: dict[str, Any] = {"dest": self.name, "help": self._help()}
        if self.flag:
            kwargs["action"] = "store_true"
        else:
            kwargs.update(action="append" if self.repeat else "store",
                          default=None if self.repeat else self.default)
            if self.type is not None:
                kwargs["type"] = self.type
            if self.choices:
                kwargs["choices"] = list(self.choices)
            if self.metavar:
                kwargs["metavar"] = self.metavar
        parser.add_argument(cli_name or self.cli, **kwargs)

    def _help(self) -> str:
        if self.flag or self.default is None:
            return self.help
        default = ", ".join(map(str, self.default)) if isinstance(self.default, (list, tuple)) \
            else self.default
        return f"{self.help} (default: {default})"


@dataclass
class StageContext:
    """What a spec's ``stages`` function needs to build its Ray stages for one run."""

    store: Store
    run_id: str
    image_root: str
    targets: list[Target]
    options: dict[str, Any]
    cpus: float
    gpus: float
    cache: dict[str, Any] = field(default_factory=dict)  # per-run inputs a columnar phase reuses


@dataclass(frozen=True)
class PhaseSpec:
    """Everything the engine needs to run, resume, count and show one phase."""

    name: str
    title: str
    help: str
    outputs: tuple[Output, ...]
    options: tuple[Option, ...]
    # Driver-side: validate options, return the run's targets (no Ray, no model weights).
    resolve: Callable[[Store, dict[str, Any]], list[Target]]
    # Ray stages for one run (``engine.runner.Stage`` objects); None for a columnar phase.
    stages: Callable[[StageContext], list[Any]] | None
    # Targets that exist on disk, for status, errors and doctor (read-only).
    discover: Callable[[Store], list[Target]]
    requires: tuple[str, ...] = ("manifest",)
    # A short hint printed after a run: what to do next.
    next_step: str = ""
    # Columnar phases (they read columns, not images) compute in the driver instead of Ray:
    # todo rows in, stage-shaped rows out, published through the same parts and fence.
    compute: Callable[[StageContext, Any], Any] | None = None
    default_part_rows: int = 1000
    # Runs after a completed run (e.g. joining flags into the manifest).
    finish: Callable[[Store], Any] | None = None
    # Flag options that print something and run nothing (no BASE needed), e.g. print_rules.
    actions: dict[str, Callable[[dict[str, Any]], str]] = field(default_factory=dict)
    # (store, target) -> ``image_id|fingerprint`` keys whose stored rows are out of date and
    # must be recomputed although present (e.g. flags computed before OCR evidence existed).
    stale: Callable[[Store, Target], Any] | None = None
    # Phases sharing one CLI command: ``exoray semantics BASE --task NAME`` (Phase V tasks).
    group: str = ""
    # (store, targets, options, todo) -> seconds per image on this machine, from a short timed
    # batch; the estimate uses it when no earlier run of the same model says how fast it is.
    calibrate: Callable[[Store, list[Target], dict[str, Any], Any], float | None] | None = None
    # CPU stages without models that may run in a local process pool instead of Ray when Ray is
    # not running and the run is small (Ray's start-up would cost more than the work).
    local_ok: bool = False

    def option(self, name: str) -> Option:
        for opt in self.options:
            if opt.name == name:
                return opt
        raise KeyError(name)

    def resolve_options(self, given: dict[str, Any]) -> dict[str, Any]:
        """Defaults filled in; an unknown option names the valid ones."""
        valid = {o.name for o in self.options}
        unknown = sorted(set(given) - valid)
        if unknown:
            raise ValueError(f"{self.name}: unknown option(s) {unknown}; valid options: "
                             f"{', '.join(sorted(valid))}")
        out = {o.name: o.default for o in self.options}
        out.update({k: self._convert(k, v) for k, v in given.items() if v is not None})
        return out

    def _convert(self, name: str, value: Any) -> Any:
        """A string from Python gets the same parsing as on the command line
        (``person_classes="Normal,Fall"`` is two classes, not ten letters)."""
        opt = self.option(name)
        if opt.type is None or not isinstance(value, str):
            return value
        try:
            return opt.type(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.name}: {name}={value!r}: {exc}") from exc
