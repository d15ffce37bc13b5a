"""Which file extensions Phase I scans: what the installed decoders can open, minus non-photos.

Why derived and not a fixed list: a fixed list silently dropped ``.heic``, ``.avif`` and ``.jfif``
files. The default set is every extension Pillow registers (``Image.registered_extensions()``
after ``Image.init()``) whose format Pillow can open here, plus HEIC/HEIF through ``pillow-heif``
when it is installed (its opener is registered by :func:`register_optional_plugins`).

Left out by default, because they are not the images a user means or cannot be decoded safely:

- EPS/PS (``.eps .ps``): loading runs Ghostscript as a subprocess; PDF, Palm: Pillow only writes.
- FITS (``.fit .fits``): astronomy data; ``.fit`` is also the Garmin/Strava activity format.
- PCD (``.pcd``): Kodak Photo CD, but in ML folders nearly always point clouds.
- GBR (``.gbr``): GIMP brushes, also Gerber PCB layers.
- BUFR, GRIB, HDF5 (``.bufr .grib .h5 .hdf``): scientific data, stub plugins without a decoder.
- WMF/EMF (``.wmf .emf``): vector, loadable only on Windows; MPEG (``.mpg .mpeg``): video;
  IPTC (``.iim``): a metadata record.
- AVIF, JPEG 2000, WebP when this Pillow was built without the codec.

Configure with ``EXORAY_EXTENSIONS`` (or the ``extensions`` argument of the scan functions, same
syntax when given as a string): comma- or space-separated items. Plain items replace the default
set, ``+ext`` adds to it, ``-ext`` removes from it; case and a leading dot do not matter::

    EXORAY_EXTENSIONS="jpg,jpeg,png"     # only these
    EXORAY_EXTENSIONS="+fits,-gif"       # the default set, plus FITS, without GIF

An iterable of names given as the argument is taken as the exact set. Narrowing the set on a
rescan marks the images no longer scanned ``deleted`` (widening it again restores them).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import threading
from collections.abc import Iterable

from PIL import Image, features

ENV_VAR = "EXORAY_EXTENSIONS"

# Pillow format id -> why its extensions are not scanned by default (see module docstring).
EXCLUDED_FORMATS: dict[str, str] = {
    "EPS": "runs Ghostscript",
    "PDF": "write-only in Pillow",
    "PALM": "write-only in Pillow",
    "FITS": "astronomy data; .fit is also an activity-tracker format",
    "PCD": "usually point clouds, not Kodak Photo CD",
    "GBR": "GIMP brush / Gerber PCB",
    "BUFR": "weather data",
    "GRIB": "weather data",
    "HDF5": "scientific data",
    "WMF": "vector, Windows-only decoder",
    "MPEG": "video",
    "IPTC": "metadata record",
}
# Formats whose decoder is optional in a Pillow build: format id -> the features.check name.
_NEEDS_FEATURE = {"AVIF": "avif", "JPEG2000": "jpg_2000", "WEBP": "webp"}
# Formats opened by another format's opener (MPO files are opened by the JPEG plugin).
_OPENED_BY = {"MPO": "JPEG"}
_HEIF_EXTENSIONS = frozenset({"heic", "heics", "heif", "heifs", "hif"})

_lock = threading.Lock()
_heif_registered = False


def register_optional_plugins() -> bool:
    """Register pillow-heif's HEIC/HEIF opener if it is installed; True when HEIF is available.

    Idempotent and thread-safe; any process that decodes what the scan listed should call it.
    """
    global _heif_registered
    with _lock:
        if _heif_registered:
            return True
        if importlib.util.find_spec("pillow_heif") is None:
            return False
        import pillow_heif

        pillow_heif.register_heif_opener()
        _heif_registered = True
        return True


def _has_feature(name: str) -> bool:
    """features.check without the warning older Pillows give for names they do not know."""
    if name in features.modules:
        return bool(features.check_module(name))
    if name in features.codecs:
        return bool(features.check_codec(name))
    return False


def _openable(fmt: str) -> bool:
    opener = _OPENED_BY.get(fmt, fmt)
    if opener not in Image.OPEN:
        return False
    feature = _NEEDS_FEATURE.get(fmt)
    return feature is None or _has_feature(feature)


@functools.lru_cache(maxsize=1)
def default_extensions() -> frozenset[str]:
    """Lower-case extensions (no dot) that the installed decoders open, minus EXCLUDED_FORMATS."""
    register_optional_plugins()
    Image.init()
    return frozenset(
        ext.lstrip(".").lower()
        for ext, fmt in Image.registered_extensions().items()
        if fmt not in EXCLUDED_FORMATS and _openable(fmt)
    )


def _clean(item: str, source: str) -> str:
    ext = item.strip().lstrip(".").lower()
    if not re.fullmatch(r"[a-z0-9_]+", ext):
        raise ValueError(
            f"{source}: {item!r} is not a file extension; use e.g. 'jpg,png' or '+fits,-gif'"
        )
    return ext


def parse_extensions(spec: str, source: str = ENV_VAR) -> frozenset[str]:
    """Apply the ``jpg,png`` / ``+fits,-gif`` syntax (module docstring) to the default set."""
    items = [i for i in re.split(r"[,\s]+", spec) if i]
    plain = {_clean(i, source) for i in items if i[0] not in "+-"}
    result = set(plain) if plain else set(default_extensions())
    for item in items:
        if item[0] == "+":
            result.add(_clean(item[1:], source))
        elif item[0] == "-":
            result.discard(_clean(item[1:], source))
    if not result:
        raise ValueError(f"{source}={spec!r} leaves no extension to scan; name at least one")
    return frozenset(result)


def resolve_extensions(extensions: str | Iterable[str] | None = None) -> frozenset[str]:
    """The set to scan: the argument, else ``EXORAY_EXTENSIONS``, else :func:`default_extensions`."""
    if extensions is None:
        env = os.environ.get(ENV_VAR, "").strip()
        return parse_extensions(env) if env else default_extensions()
    if isinstance(extensions, str):
        return parse_extensions(extensions, source="extensions")
    result = frozenset(_clean(e, "extensions") for e in extensions)
    if not result:
        raise ValueError("extensions is empty; name at least one extension to scan")
    return result


def missing_decoder_hint(ext: str) -> str | None:
    """Why files with ``ext`` may have been skipped and how to scan them, or None."""
    if ext in _HEIF_EXTENSIONS and not register_optional_plugins():
        return "pip install pillow-heif to scan HEIC/HEIF"
    if ext in ("avif", "avifs") and not _has_feature("avif"):
        return "this Pillow has no AVIF codec; install Pillow>=11.3 wheels to scan AVIF"
    return None
