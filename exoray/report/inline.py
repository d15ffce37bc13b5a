"""The report as one self-contained HTML document, for showing it inside a notebook.

Colab renders cell outputs in a sandboxed frame that cannot open files from Drive, and exoray
runs no server, so the notebook view carries everything itself: the scripts and styles inline,
sprite sheets and CSV lists as ``data:`` URIs (the page looks paths up in ``EXORAY_FILES``).
The report folder stays the thing to keep and share; this is a view of it.
"""

from __future__ import annotations

import base64
import html
import json
import os

from exoray.storage.store import Store

MAX_INLINE_BYTES = 40 << 20  # beyond this a notebook output gets sluggish: open index.html
MIME = {".webp": "image/webp", ".csv": "text/csv", ".jpg": "image/jpeg"}


def inline_html(out: str | os.PathLike[str] | Store) -> str:
    """index.html of the report in ``out`` with every asset inside it."""
    store = out if isinstance(out, Store) else Store(os.fspath(out))
    if not store.exists("index.html"):
        raise FileNotFoundError(f"no report in {store.location}; build it with "
                                "`exoray report BASE` first")
    files = {}
    total = 0
    for entry in store.list_files("", recursive=True):
        ext = os.path.splitext(entry.relpath)[1]
        if ext in MIME:
            total += entry.size
            if total > MAX_INLINE_BYTES:
                raise ValueError(f"the report in {store.location} is over "
                                 f"{MAX_INLINE_BYTES >> 20} MB: too large to show inline; open "
                                 "its index.html in a browser (or lower --max-per-gallery)")
            data = base64.b64encode(store.read_bytes(entry.relpath)).decode("ascii")
            files[entry.relpath] = f"data:{MIME[ext]};base64,{data}"
    page = store.read_bytes("index.html").decode("utf-8")
    css = store.read_bytes("report.css").decode("utf-8")
    scripts = ["window.EXORAY_FILES = " + json.dumps(files) + ";",
               store.read_bytes("data.js").decode("utf-8")]
    if store.exists("map.js"):
        scripts.append(store.read_bytes("map.js").decode("utf-8"))
    scripts.append(store.read_bytes("report.js").decode("utf-8"))
    inline_js = "\n".join(f"<script>{_safe(s)}</script>" for s in scripts)
    page = page.replace('<link rel="stylesheet" href="report.css">', f"<style>{css}</style>")
    page = page.replace('<script src="data.js"></script>\n<script src="report.js"></script>',
                        inline_js)
    return page


def _safe(script: str) -> str:
    """A script body that cannot close its own <script> element early."""
    return script.replace("</", "<\\/")


def show_report(out: str | os.PathLike[str] | Store, *, height: int = 900):
    """Display the report inline in a notebook (an iframe holding the whole document)."""
    from IPython.display import HTML

    doc = inline_html(out)
    return HTML(f'<iframe srcdoc="{html.escape(doc, quote=True)}" '
                f'style="width:100%;height:{int(height)}px;border:1px solid #ccc"></iframe>')
