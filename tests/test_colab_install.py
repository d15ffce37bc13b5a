"""The notebooks' install cell (exoray/dev/colab_install.py), run headless in a faked Colab.

The cell cannot import exoray (it installs it), so it carries a copy of the module's code: these
tests check that both notebooks hold exactly that copy, then ``exec`` the notebooks' own cell
source with ``exoray`` made unimportable, fake installed torch/torchvision versions and
``subprocess.run`` recorded, to see which pip command it picks. The slow test builds a real wheel
with ``scripts/build_wheel.sh`` and installs it with the command the cell picked.
"""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
import zipfile
from contextlib import redirect_stdout
from importlib import metadata
from pathlib import Path

import nbformat
import pytest

from exoray.dev import colab_install

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "colab").glob("*.ipynb"))
COLAB_TORCH = {"torch": "2.5.1+cu121", "torchvision": "0.20.1+cu121"}
REAL_RUN = subprocess.run


def _cells(name: str) -> list:
    return [c for c in nbformat.read(ROOT / "colab" / name, as_version=4).cells
            if c.cell_type == "code"]


def _install_source(name: str = NOTEBOOKS[0]) -> str:
    (cell,) = [c for c in _cells(name) if c.get("id") == "install"]
    return cell.source


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_install_cell_is_the_module_code(name):
    assert _install_source(name) == colab_install.cell_source(), (
        "the install cell differs from exoray/dev/colab_install.py: run "
        "`.venv/bin/python -m exoray.dev.colab_install colab/*.ipynb`")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_install_cell_runs_after_base_and_before_any_exoray_import(name):
    ids = [c.get("id") for c in _cells(name)]
    assert ids.index("base") < ids.index("install")  # it needs BASE (Drive mounted) for wheels/
    for cell in _cells(name)[:ids.index("install")]:
        for word in ("import exoray", "from exoray", "import pipelines", "from pipelines"):
            assert word not in cell.source, (cell.get("id"), word)


def _set(source: str, name: str, value) -> str:
    """The user's edit of a setting at the top of the cell."""
    lines = source.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.startswith(f"{name} = ")]
    assert len(hits) == 1, name
    lines[hits[0]] = f"{name} = {value!r}\n"
    return "".join(lines)


class FakeColab:
    """exoray not importable, chosen torch/torchvision versions installed, pip recorded."""

    def __init__(self, tmp_path: Path, monkeypatch, versions=COLAB_TORCH, importable=False):
        self.base = tmp_path / "drive" / "MyDrive" / "exokiratory"
        self.base.mkdir(parents=True)
        self.tmp = tmp_path / "tmp"
        self.tmp.mkdir()
        self.calls: list[list[str]] = []
        real_find_spec = importlib.util.find_spec

        def find_spec(name, *args, **kwargs):
            if name == "exoray" and not importable:
                return None
            return real_find_spec(name, *args, **kwargs)

        def version(name):
            if name in versions:
                return versions[name]
            raise metadata.PackageNotFoundError(name)

        def run(cmd, *args, **kwargs):
            self.calls.append(list(cmd))
            return subprocess.CompletedProcess(cmd, 0)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)
        monkeypatch.setattr(metadata, "version", version)
        monkeypatch.setattr(subprocess, "run", run)
        monkeypatch.setattr("tempfile.tempdir", str(self.tmp))

    def wheel(self, name: str, content: bytes, mtime: float) -> Path:
        path = self.base / "wheels" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content)
        os.utime(path, (mtime, mtime))
        return path

    def run_cell(self, source: str) -> str:
        out = io.StringIO()
        with redirect_stdout(out):
            exec(compile(source, "install-cell", "exec"), {"BASE": str(self.base)})
        return out.getvalue()

    def constraints(self, cmd: list[str]) -> str:
        assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
        return Path(cmd[cmd.index("-c") + 1]).read_text()


def test_newest_wheel_on_drive_wins(tmp_path, monkeypatch):
    fake = FakeColab(tmp_path, monkeypatch)
    fake.wheel("exoray-0.0.9-py3-none-any.whl", b"old", 1_000_000)
    # Drive names a second upload of the same file like this; pip needs the real wheel name.
    fake.wheel("exoray-0.1.0-py3-none-any (1).whl", b"new", 2_000_000)
    source = _set(_install_source(), "EXORAY_GIT_URL", "https://github.com/acme/exoray.git")
    printed = fake.run_cell(source)

    (cmd,) = fake.calls
    wheel = Path(cmd[-1].removesuffix("[models]"))
    assert cmd[-1].endswith("[models]")
    assert wheel.name == "exoray-0.1.0-py3-none-any.whl"
    assert wheel.read_bytes() == b"new"
    assert wheel.parent.parent == fake.tmp  # copied off Drive to local disk
    assert fake.constraints(cmd) == "torch==2.5.1+cu121\ntorchvision==0.20.1+cu121\n"
    assert "pinned: torch==2.5.1+cu121 torchvision==0.20.1+cu121" in printed

    # The module picks the same.
    again = colab_install.install_command(str(fake.base), "x", False, "models", "c.txt")
    assert Path(again[-1].removesuffix("[models]")).name == wheel.name
    assert again[:-1] == [*cmd[:-3], "-c", "c.txt"]


@pytest.mark.parametrize("url", ["https://github.com/acme/exoray.git",
                                 "git+https://github.com/acme/exoray.git"])
def test_git_url_when_no_wheel(tmp_path, monkeypatch, url):
    fake = FakeColab(tmp_path, monkeypatch)
    (fake.base / "wheels").mkdir()  # present but empty
    fake.run_cell(_set(_install_source(NOTEBOOKS[1]), "EXORAY_GIT_URL", url))
    (cmd,) = fake.calls
    assert cmd[-1] == "exoray[models] @ git+https://github.com/acme/exoray.git"
    assert cmd[-3] == "-c"
    assert fake.constraints(cmd) == "torch==2.5.1+cu121\ntorchvision==0.20.1+cu121\n"
    assert cmd == colab_install.install_command(str(fake.base), url, constraints=cmd[-2])


def test_token_in_git_url_is_not_printed(tmp_path, monkeypatch):
    fake = FakeColab(tmp_path, monkeypatch)
    url = "https://ghp_secret123@github.com/acme/exoray.git"
    printed = fake.run_cell(_set(_install_source(), "EXORAY_GIT_URL", url))
    assert fake.calls[0][-1] == f"exoray[models] @ git+{url}"
    assert "ghp_secret123" not in printed and "//***@github.com" in printed


def test_neither_wheel_nor_url_says_what_to_do(tmp_path, monkeypatch):
    fake = FakeColab(tmp_path, monkeypatch)
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(RuntimeError, match="not installed"):
        exec(_install_source(), {"BASE": str(fake.base)})
    printed = out.getvalue()
    assert fake.calls == []
    assert "bash scripts/build_wheel.sh" in printed
    assert str(fake.base / "wheels") in printed
    assert "EXORAY_GIT_URL" in printed
    assert colab_install.install_command(str(fake.base)) is None


def test_package_index_only_when_asked(tmp_path, monkeypatch):
    fake = FakeColab(tmp_path, monkeypatch, versions={})  # no torch installed: nothing pinned
    fake.run_cell(_set(_install_source(), "EXORAY_FROM_INDEX", True))
    (cmd,) = fake.calls
    assert cmd[-1] == "exoray[models]"
    assert fake.constraints(cmd) == ""


def test_no_op_when_exoray_is_importable(tmp_path, monkeypatch):
    fake = FakeColab(tmp_path, monkeypatch, importable=True)
    fake.wheel("exoray-0.1.0-py3-none-any.whl", b"x", 1_000_000)
    assert fake.run_cell(_install_source()) == ""
    assert fake.calls == []
    assert list(fake.tmp.iterdir()) == []


def test_pins_are_the_installed_versions():
    expected = "".join(f"{n}=={metadata.version(n)}\n" for n in ("torch", "torchvision"))
    assert colab_install.pins() == expected
    assert colab_install.pins(("torch", "surely-not-installed-xyz")) == expected.splitlines(
        keepends=True)[0]


@pytest.mark.slow
def test_real_wheel_installs_with_the_cells_command(tmp_path, monkeypatch):
    dist = tmp_path / "dist"
    built = REAL_RUN(["bash", str(ROOT / "scripts" / "build_wheel.sh"), str(dist)],
                     capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("exoray-*.whl")
    assert f"built {wheel}" in built.stdout
    assert f"MyDrive/exokiratory/wheels/{wheel.name}" in built.stdout
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    for needed in ("exoray/models/configs/tiny_clip.json", "pipelines/features.py",
                   "exoray/cli/__init__.py", "exoray/dev/colab_install.py", "exoray/py.typed"):
        assert needed in names, needed
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]

    fake = FakeColab(tmp_path, monkeypatch, versions={})
    fake.wheel(wheel.name, wheel.read_bytes(), 2_000_000)
    fake.run_cell(_install_source())
    (cmd,) = fake.calls
    target = tmp_path / "site"
    # The cell's own command, offline and without dependencies (they are in this venv already).
    done = REAL_RUN([*cmd, "--no-deps", "--no-index", "--target", str(target)],
                    capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    probe = ("import exoray, pipelines, importlib.resources as r; print(exoray.__version__); "
             "print(exoray.__file__); print(pipelines.__file__); "
             "print(r.files('exoray.models').joinpath('configs/tiny_clip.json').is_file())")
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = REAL_RUN([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True,
                   text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    version, exoray_file, pipelines_file, has_config = out.stdout.split()
    import exoray

    assert version == exoray.__version__
    assert Path(exoray_file).is_relative_to(target)
    assert Path(pipelines_file).is_relative_to(target)
    assert has_config == "True"
