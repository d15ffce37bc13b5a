"""Errors raised inside Ray workers reach the user as one line that names the value and the fix."""

from __future__ import annotations

import time

import pytest
from ray.exceptions import RayTaskError

from exoray.cli.main import main
from exoray.engine.worker_errors import WorkerFailure, user_facing
from exoray.storage.lease import LeaseLost
from pipelines import manifest


def wrapped(cause: BaseException) -> BaseException:
    """What Ray hands the driver: the remote traceback as text around the original exception."""
    return RayTaskError("MapWorker.__call__", "Traceback (most recent call last):\n  ...\n"
                        f"{type(cause).__name__}: {cause}", cause)


def test_a_user_error_comes_back_as_itself():
    cause = FileNotFoundError("query.jpg does not exist; pass an image file")
    assert user_facing(wrapped(cause)) is cause
    lost = LeaseLost("run b of phase 'features' took over from run a")
    assert user_facing(wrapped(lost)) is lost


def test_our_own_cause_chain_is_kept():
    """``raise FileNotFoundError(...) from OfflineError`` must not be unwrapped past ours."""
    try:
        try:
            raise ConnectionError("no DNS")
        except ConnectionError as exc:
            raise FileNotFoundError("weights missing; --checkpoint clip=PATH") from exc
    except FileNotFoundError as ours:
        assert user_facing(ours) is ours
        assert user_facing(wrapped(ours)) is ours


def test_an_unexpected_worker_failure_is_one_line():
    error = user_facing(wrapped(ZeroDivisionError("division by zero")))
    assert isinstance(error, WorkerFailure) and "\n" not in str(error)
    assert "ZeroDivisionError: division by zero" in str(error) and "-v" in str(error)
    assert user_facing(error) is error  # never wrapped twice


def test_missing_weights_offline_fail_fast_before_any_worker(synth_set, tmp_path, capsys,
                                                              monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root, _ = synth_set
    base = tmp_path / "base"
    manifest.run(base, images=root)
    started = time.perf_counter()
    assert main(["embed", str(base), "--model", "clip"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "--checkpoint clip=PATH" in err and "offline" in err
    assert time.perf_counter() - started < 60  # no actor restarts, no Ray at all
    import ray

    assert not ray.is_initialized()


@pytest.mark.parametrize("spec", ["nosuch", "clip:nosuch"])
def test_a_bad_model_spec_lists_the_valid_ones(synth_set, tmp_path, capsys, spec):
    root, _ = synth_set
    manifest.run(tmp_path / "base", images=root)
    assert main(["embed", str(tmp_path / "base"), "--model", spec]) == 2
    err = capsys.readouterr().err
    assert "valid" in err and len(err.strip().splitlines()) == 1
