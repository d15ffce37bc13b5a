"""The notebooks' install step: install exoray in Colab without a package index entry.

Order of preference: (a) the newest ``exoray-*.whl`` in ``BASE/wheels`` (built by
``bash scripts/build_wheel.sh`` and copied to ``MyDrive/exokiratory/wheels``), (b) a git URL,
(c) ``pip install exoray[models]`` from the package index, only when asked for. The torch and
torchvision already installed (Colab's CUDA builds) are pinned in a constraints file given to pip
with ``-c``, so pip can never replace them. Nothing happens when exoray is already importable.

A notebook cannot import this module before exoray is installed, so its install cell carries a
copy of the code between the ``>>> install cell`` and ``<<< install cell`` markers below:
:func:`cell_source` is that copy, and ``tests/test_colab_install.py`` checks that the committed
notebooks hold exactly it. After editing the marked code, rewrite the cells with
``python -m exoray.dev.colab_install colab/*.ipynb``.
"""

from __future__ import annotations

# >>> install cell
import contextlib
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata

NO_SOURCE = """exoray is not installed and there is nothing to install it from. Either:
  * run `bash scripts/build_wheel.sh` in a checkout of exoray and copy the wheel it builds
    (dist/exoray-*.whl) into {wheels} (in Colab: Google Drive, MyDrive/exokiratory/wheels), or
  * set EXORAY_GIT_URL at the top of this cell to the repository, e.g.
    "https://github.com/<you>/exoray.git" (private: "https://<token>@github.com/<you>/exoray.git"),
then run this cell again."""


def pins(packages=("torch", "torchvision")):
    """``name==version`` lines (as ``pip freeze`` writes them) for those of packages installed."""
    lines = []
    for name in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            lines.append(f"{name}=={metadata.version(name)}\n")
    return "".join(lines)


def install_command(base, git_url="", from_index=False, extras="models", constraints=None):
    """The pip argv installing exoray from BASE/wheels, else git_url, else the index; or None."""
    wheels = glob.glob(os.path.join(base, "wheels", "exoray-*.whl"))
    extra = f"[{extras}]" if extras else ""
    if wheels:
        # Newest = last modified. Copied to local disk under its wheel name, which pip insists on
        # (Drive calls a second upload "exoray-...-any (1).whl").
        newest = max(wheels, key=os.path.getmtime)
        name = re.sub(r" \(\d+\)(?=\.whl$)", "", os.path.basename(newest))
        wheel = os.path.join(tempfile.mkdtemp(prefix="exoray-wheel-"), name)
        shutil.copyfile(newest, wheel)
        spec = wheel + extra
    elif git_url.strip():
        url = git_url.strip()
        spec = f"exoray{extra} @ {url if url.startswith('git+') else 'git+' + url}"
    elif from_index:
        spec = "exoray" + extra
    else:
        return None
    cflag = ["-c", constraints] if constraints else []
    return [sys.executable, "-m", "pip", "install", "-q", *cflag, spec]


def ensure_installed(base, git_url="", from_index=False, extras="models"):
    """Install exoray unless importable, keeping torch/torchvision; returns the pip argv run."""
    if importlib.util.find_spec("exoray") is not None:
        return None
    constraints = os.path.join(tempfile.gettempdir(), "exoray-constraints.txt")
    pinned = pins()
    with open(constraints, "w") as f:
        f.write(pinned)
    cmd = install_command(base, git_url, from_index, extras, constraints)
    if cmd is None:
        print(NO_SOURCE.format(wheels=os.path.join(base, "wheels")))
        raise RuntimeError("exoray is not installed: see the message above")
    shown = re.sub(r"//[^/@]+@", "//***@", cmd[-1])  # no token in the notebook's output
    print("installing", shown, "| pinned:", pinned.replace("\n", " ").strip() or "nothing")
    subprocess.run(cmd, check=True)
    importlib.invalidate_caches()
    return cmd
# <<< install cell


SETTINGS = '''\
# @title Install exoray { display-mode: "form" }
EXORAY_GIT_URL = ""  # @param {type:"string"}
EXORAY_FROM_INDEX = False  # @param {type:"boolean"}
# EXORAY_GIT_URL is used when BASE/wheels holds no exoray-*.whl; EXORAY_FROM_INDEX=True installs
# `exoray[models]` from the package index. The code below is exoray/dev/colab_install.py
# (this notebook cannot import exoray before installing it).
'''
CALL = "ensure_installed(BASE, EXORAY_GIT_URL, EXORAY_FROM_INDEX);\n"


def shared_code() -> str:
    """The code between the markers of this file, as the install cell holds it."""
    with open(__file__, encoding="utf-8") as f:
        text = f.read()
    start = text.index("# >>> install cell\n") + len("# >>> install cell\n")
    return text[start:text.index("# <<< install cell\n")]


def cell_source() -> str:
    """The notebooks' install cell: the settings, the shared code, then the call."""
    return f"{SETTINGS}\n{shared_code()}\n\n{CALL}".rstrip("\n")


def write_cells(paths: list[str]) -> None:
    """Replace the code cell with id ``install`` of each notebook by :func:`cell_source`."""
    import nbformat

    for path in paths:
        nb = nbformat.read(path, as_version=4)
        cells = [c for c in nb.cells if c.get("id") == "install"]
        if len(cells) != 1:
            raise SystemExit(f"{path}: expected one cell with id 'install', found {len(cells)}")
        cells[0].source = cell_source()
        nbformat.write(nb, path)
        print("rewrote the install cell of", path)


if __name__ == "__main__":
    write_cells(sys.argv[1:])
