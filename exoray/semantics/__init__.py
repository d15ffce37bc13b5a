"""Phase V: expensive per-image semantics (detections, OCR, ...) on chosen subsets.

Each task is a phase spec built by :func:`exoray.semantics.tasks.task_spec` (``pipelines/detect.py``,
``pipelines/ocr.py``); readers here give notebooks per-image and per-instance tables and text search.
"""

from exoray.semantics.read import read_objects, read_ocr_lines, read_task, search_text

__all__ = ["read_objects", "read_ocr_lines", "read_task", "search_text"]
