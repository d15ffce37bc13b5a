"""The command line: help everywhere, clear one-line errors, synth + manifest + status JSON."""

from __future__ import annotations

import json

import pytest

from exoray.cli.main import build_parser, main

COMMANDS = ["manifest", "features", "dupes", "status", "errors", "synth", "demo", "embed", "index",
            "search", "cluster", "sample"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: exoray " + command in capsys.readouterr().out


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
    with pytest.raises(SystemExit):
        main(["features", str(tmp_path), "--part-rows", "0"])
    assert "must be >= 1" in capsys.readouterr().err


def test_status_without_manifest_says_what_to_do(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 0
    assert "exoray manifest" in capsys.readouterr().out
