"""The command line: help everywhere, clear one-line errors, synth + manifest + status JSON."""

from __future__ import annotations

import json

import pytest

from exoray.cli.main import build_parser, main

COMMANDS = ["manifest", "features", "dupes", "status", "errors", "synth", "demo", "embed", "index",
            "search", "cluster", "sample", "doctor", "map", "report"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    assert "usage: exoray " + command in capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_and_says_its_default(command):
    import argparse

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for action in sub.choices[command]._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        assert action.help, f"{command} {action.option_strings} has no help"
        if action.nargs != 0 and action.default not in (None, argparse.SUPPRESS):
            assert "default" in action.help, f"{command} {action.option_strings} hides its default"


def test_verbose_and_quiet_work_after_the_subcommand(tmp_path, capsys):
    assert main(["status", str(tmp_path), "-v"]) == 0
    assert main(["status", str(tmp_path), "-q"]) == 0


def test_parser_knows_all_commands():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(COMMANDS) <= set(sub.choices)


def test_synth_manifest_status_json(tmp_path, capsys):
    images, base = tmp_path / "imgs", tmp_path / "base"
    assert main(["synth", str(images), "--n", "20", "--seed", "3", "--corrupt"]) == 0
    truth = json.loads((images / "truth.json").read_text())
    assert len(truth["images"]) == 20
    assert main(["manifest", str(base), "--images", str(images)]) == 0
    capsys.readouterr()
    assert main(["status", str(base), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["images_present"] == 20
    (features,) = [p for p in status["phases"] if p["phase"] == "features"]
    assert features["done"] == 0 and features["total"] == 20


def test_user_errors_are_one_line_with_the_fix(tmp_path, capsys):
    assert main(["features", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "exoray manifest" in err and "Traceback" not in err
    assert main(["manifest", str(tmp_path / "b"), "--images", str(tmp_path / "missing")]) == 2
    assert "--images" in capsys.readouterr().err
    assert main(["features", str(tmp_path), "--part-rows", "0"]) == 2
    assert "positive integer" in capsys.readouterr().err


def test_status_without_manifest_says_what_to_do(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 0
    assert "exoray manifest" in capsys.readouterr().out


def test_ray_cpp_notices_are_cut_from_stderr_even_after_a_progress_bar():
    from exoray.cli.quiet import _cut

    line = (b"features committed: 0%| | 0/20[2026-11-27 12:25:42,638 E 12898 12898] "
            b"core_worker.cc:2465: Actor with class name: 'MapWorker' has constructor arguments")
    assert _cut(line) == b"features committed: 0%| | 0/20"
    assert _cut(b"exoray features: error: x.jpg is corrupt") == b"exoray features: error: x.jpg is corrupt"


@pytest.mark.parametrize("command", ["status", "errors", "doctor", "subsets"])
def test_read_only_commands_never_create_a_mistyped_base(command, tmp_path, capsys):
    missing = tmp_path / "mistyped"
    assert main([command, str(missing)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not missing.exists()


def test_errors_phase_is_validated(tmp_path, capsys):
    assert main(["errors", str(tmp_path), "--phase", "featurez"]) == 2
    err = capsys.readouterr().err
    assert "featurez" in err and "features" in err  # names the valid phases


def test_ray_python_notices_are_filtered_but_errors_kept():
    from exoray.cli.quiet import RAY_PY_LINE

    assert RAY_PY_LINE.match(b"2026-11-27 12:30:36,174\tWARNING dataset.py:8601 -- Warning: The "
                             b"Ray cluster currently does not have any available CPUs.")
    assert not RAY_PY_LINE.match(b"exoray features: error: photo.jpg is corrupt")


def test_errors_lists_files_the_scan_skipped(tmp_path, capsys):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(images / "red.png")
    (images / ".hidden.jpg").write_bytes(b"not shown")
    base = tmp_path / "base"
    assert main(["manifest", str(base), "--images", str(images)]) == 0
    capsys.readouterr()
    assert main(["errors", str(base)]) == 0
    out = capsys.readouterr().out
    assert ".hidden.jpg: skipped by the scan (hidden" in out
