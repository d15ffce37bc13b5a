"""colab/07_report.ipynb executed headless on a small generated set: it builds the report and
shows it inline (one self-contained frame), without any output error. Also the inline view
itself: everything the page needs is inside the document."""

from __future__ import annotations

import html
import json
import os
import re
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "colab" / "07_report.ipynb"


def test_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.slow
def test_notebook_builds_the_report_and_shows_it_inline(tmp_path, monkeypatch):
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    env = {**os.environ, "EXORAY_BASE": str(tmp_path / "base"), "EXORAY_DEMO_N": "40",
           "EXORAY_MAX_PER_GALLERY": "6", "RAY_AUTH_MODE": "disabled", "TQDM_DISABLE": "1"}
    env.pop("RAY_ADDRESS", None)
    try:
        argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
    except NoSuchKernel:
        argv0 = ""
    if os.path.abspath(argv0) != os.path.abspath(sys.executable) and argv0 not in (
            "python", f"python{sys.version_info[0]}"):
        spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
        spec_dir.mkdir(parents=True)
        (spec_dir / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (exoray tests)", "language": "python"}))
        env["JUPYTER_PATH"] = str(tmp_path / "jupyter")
        monkeypatch.setenv("JUPYTER_PATH", env["JUPYTER_PATH"])
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import ray\nray.shutdown()", id="test-shutdown"))
    work = tmp_path / "work"
    work.mkdir()
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                                     startup_timeout=120,
                                     resources={"metadata": {"path": str(work)}})
    client.execute(env=env)
    text = ""
    frames = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert cell.execution_count is not None, cell.source
        for out in cell.outputs:
            assert out.get("output_type") != "error", (cell.source, out)
            if out.get("output_type") == "stream":
                text += out["text"]
            frames += [out["data"]["text/html"] for k in ("data",) if k in out
                       and "text/html" in out["data"]]
    assert "generated 40 synthetic images" in text
    match = re.search(r"report: (\d+) sections .* -> (\S+index\.html)", text)
    assert match, text[-2000:]
    index = Path(match.group(2))
    assert index == tmp_path / "base" / "reports" / "latest" / "index.html" and index.is_file()
    assert "sprites/sheet-000.webp" in text and "lists/errors.csv" in text
    (frame,) = [f for f in frames if "<iframe srcdoc=" in f]
    doc = html.unescape(frame.split('srcdoc="', 1)[1].split('" style=', 1)[0])
    assert "window.EXORAY_REPORT" in doc and "data:image/webp;base64," in doc
    assert 'src="' not in doc.split("<body>", 1)[1]  # nothing left to fetch from a file
