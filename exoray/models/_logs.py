"""Keep model loading quiet and truthful in worker logs.

open_clip logs "No pretrained weights loaded ... initialized randomly" whenever a model is created
before its weights are loaded, which is exactly how the backends load (so they can hash the file
they load): that line would be false. transformers draws progress bars for tiny save/load steps,
which every Ray actor would print to the driver.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

_MISLEADING = (
    "No pretrained weights loaded",
    "Local config loaded, but no CLIP weights found",
)


class _DropMisleading(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_MISLEADING)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Within the block: drop open_clip's misleading warnings and transformers' progress bars."""
    root = logging.getLogger()
    flt = _DropMisleading()
    root.addFilter(flt)
    tf_logging = None
    if "transformers" in sys.modules:
        from transformers.utils import logging as tf_logging
    bars_were_on = tf_logging is not None and tf_logging.is_progress_bar_enabled()
    if bars_were_on:
        tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        root.removeFilter(flt)
        if bars_were_on:
            tf_logging.enable_progress_bar()
