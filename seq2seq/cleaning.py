"""The training split cleaned before training, as production pipelines do first (OpenNMT's filters, Moses'
clean-corpus, Marian's and Bicleaner's preprocessing). Validation and test splits are never filtered.

Each filter is a ``data.*`` key (seq2seq/config/sections.py); a pair is counted under the first that removes it,
in this order:

- ``empty``: a side empty or whitespace only; the reader drops these in every split (seq2seq/data.py), there is
  no key;
- ``copies`` (``data.clean_copies``): the target is the source copied (equal up to case and spacing);
- ``length_ratio`` (``data.clean_max_ratio``): the longer side has more than this many times the characters of the
  shorter one, each counted + 1 (so that a one-word pair is not judged by its length alone);
- ``wrong_script`` (``data.clean_min_script``): less than this share of a side's letters is in its language's
  script (:data:`LANGUAGE_SCRIPTS`; a language not listed there is not checked, a line without letters passes);
- ``duplicates`` (``data.clean_duplicates``): the same pair again (the first is kept).

:func:`clean_pairs` returns the kept pairs and the counts; the run logs them and writes them to
``OUT/cleaning.json``. The kept row numbers are cached under ``data.cache_dir`` by corpus and settings, so a second
run on the same corpus does not clean again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from seq2seq.config import DataConfig

logger = logging.getLogger("seq2seq.train")

#: the scripts (the first word of a letter's Unicode name) a language's text is written in, by ISO 639-1 code
LANGUAGE_SCRIPTS: dict[str, tuple[str, ...]] = {
    **{lang: ("LATIN",) for lang in (
        "af", "az", "br", "bs", "ca", "cs", "cy", "da", "de", "en", "eo", "es", "et", "eu", "fi", "fil", "fr", "ga",
        "gl", "hr", "ht", "hu", "id", "is", "it", "jv", "ku", "la", "lb", "lt", "lv", "mg", "ms", "mt", "nb", "nl",
        "nn", "no", "oc", "pl", "pt", "ro", "sk", "sl", "so", "sq", "sv", "sw", "tl", "tr", "uz", "vi", "yo", "zu")},
    **{lang: ("CYRILLIC",) for lang in ("be", "bg", "kk", "ky", "mk", "mn", "ru", "tg", "tt", "uk")},
    "sr": ("CYRILLIC", "LATIN"),
    "el": ("GREEK",), "he": ("HEBREW",), "yi": ("HEBREW",), "ar": ("ARABIC",), "fa": ("ARABIC",), "ur": ("ARABIC",),
    "ps": ("ARABIC",), "hi": ("DEVANAGARI",), "mr": ("DEVANAGARI",), "ne": ("DEVANAGARI",), "bn": ("BENGALI",),
    "gu": ("GUJARATI",), "pa": ("GURMUKHI",), "ta": ("TAMIL",), "te": ("TELUGU",), "kn": ("KANNADA",),
    "ml": ("MALAYALAM",), "si": ("SINHALA",), "th": ("THAI",), "lo": ("LAO",), "km": ("KHMER",), "my": ("MYANMAR",),
    "ka": ("GEORGIAN",), "hy": ("ARMENIAN",), "am": ("ETHIOPIC",), "bo": ("TIBETAN",),
    "zh": ("CJK",), "ja": ("CJK", "HIRAGANA", "KATAKANA"), "ko": ("HANGUL", "CJK"),
}
#: the filters in the order a pair is judged (``empty`` is the reader's)
FILTERS = ("copies", "length_ratio", "wrong_script", "duplicates")
_VERSION = "1"  # bump when a filter's rule changes, so that cached results are not reused


def language_scripts(lang: str) -> tuple[str, ...] | None:
    """The scripts of ``lang`` (``pt-BR`` and ``zh_Hans`` count as ``pt`` and ``zh``), None when unknown."""
    return LANGUAGE_SCRIPTS.get(lang.replace("_", "-").split("-")[0].lower())


_SCRIPT_OF: dict[str, str] = {}


def _script(char: str) -> str:
    script = _SCRIPT_OF.get(char)
    if script is None:
        script = unicodedata.name(char, "UNKNOWN").split(" ")[0].split("-")[0]  # KATAKANA-HIRAGANA ... ー
        script = _SCRIPT_OF[char] = "LATIN" if script == "FULLWIDTH" else script
    return script


def script_share(text: str, scripts: tuple[str, ...]) -> float:
    """The share of the letters of ``text`` that are in one of ``scripts`` (1.0 for a text without letters)."""
    if text.isascii():  # the fast path: ASCII letters are Latin
        has_letters = any(c.isalpha() for c in text)
        return 1.0 if not has_letters or "LATIN" in scripts else 0.0
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 1.0
    return sum(_script(c) in scripts for c in letters) / len(letters)


def _normalized(text: str) -> str:
    return " ".join(text.casefold().split())


def removal_reason(src: str, tgt: str, cfg: DataConfig, src_scripts, tgt_scripts) -> str | None:
    """The first filter (of :data:`FILTERS` but duplicates) that removes the pair, or None."""
    if cfg.clean_copies and _normalized(src) == _normalized(tgt):
        return "copies"
    if cfg.clean_max_ratio > 0:
        shorter, longer = sorted((len(src), len(tgt)))
        if (longer + 1) / (shorter + 1) > cfg.clean_max_ratio:
            return "length_ratio"
    if cfg.clean_min_script > 0:
        for text, scripts in ((src, src_scripts), (tgt, tgt_scripts)):
            if scripts is not None and script_share(text, scripts) < cfg.clean_min_script:
                return "wrong_script"
    return None


def settings(cfg: DataConfig) -> dict[str, Any]:
    return {"clean_duplicates": cfg.clean_duplicates, "clean_copies": cfg.clean_copies,
            "clean_max_ratio": cfg.clean_max_ratio, "clean_min_script": cfg.clean_min_script}


def kept_rows(raw, cfg: DataConfig) -> tuple[np.ndarray, dict[str, int]]:
    """(the row numbers of ``raw`` that pass every filter, the pairs each filter removed)."""
    src_scripts, tgt_scripts = language_scripts(cfg.src_lang), language_scripts(cfg.tgt_lang)
    removed = dict.fromkeys(FILTERS, 0)
    seen: set[int] = set()
    kept = []
    chunk = 10_000
    for start in range(0, len(raw), chunk):
        rows = raw[start : start + chunk]
        for offset, (src, tgt) in enumerate(zip(rows["src"], rows["tgt"])):
            reason = removal_reason(src, tgt, cfg, src_scripts, tgt_scripts)
            if reason is None and cfg.clean_duplicates:
                key = hash((src, tgt))
                reason = "duplicates" if key in seen else None
                seen.add(key)
            if reason is None:
                kept.append(start + offset)
            else:
                removed[reason] += 1
    return np.asarray(kept, dtype=np.int64), removed


def clean_pairs(raw, cfg: DataConfig, empty: int = 0) -> tuple[Any, dict[str, Any]]:
    """(the training pairs of ``raw`` that pass the filters, the report saved as ``cleaning.json``); ``empty``: the
    pairs the reader dropped for an empty side. Cached under ``data.cache_dir`` by corpus and settings."""
    key = hashlib.sha256(json.dumps([_VERSION, raw._fingerprint, cfg.src_lang, cfg.tgt_lang, settings(cfg)],
                                    sort_keys=True).encode()).hexdigest()[:32]
    cache = Path(cfg.cache_dir).expanduser() / "cleaning"
    rows_file, counts_file = cache / f"{key}.rows", cache / f"{key}.json"
    if rows_file.is_file() and counts_file.is_file():  # raw int64 rows: nothing that could unpickle
        rows, removed = np.fromfile(rows_file, dtype=np.int64), json.loads(counts_file.read_text(encoding="utf-8"))
    else:
        rows, removed = kept_rows(raw, cfg)
        cache.mkdir(parents=True, exist_ok=True)
        np.asarray(rows, dtype=np.int64).tofile(rows_file)  # the rows first: counts are only ever beside their rows
        counts_file.write_text(json.dumps(removed), encoding="utf-8")
    removed = {"empty": empty, **removed}
    report = {"pairs_read": len(raw) + empty, "removed": removed, "pairs_kept": int(len(rows)),
              "settings": settings(cfg), "scripts": {cfg.src_lang: language_scripts(cfg.src_lang),
                                                     cfg.tgt_lang: language_scripts(cfg.tgt_lang)}}
    logger.info("cleaning the training pairs: %d read, %d kept; removed: %s", report["pairs_read"], len(rows),
                ", ".join(f"{name} {count}" for name, count in removed.items()))
    for lang in (cfg.src_lang, cfg.tgt_lang):
        if cfg.clean_min_script > 0 and language_scripts(lang) is None:
            logger.info("no script known for language '%s': its side is not checked for the wrong script", lang)
    if len(rows) == len(raw):
        return raw, report
    return raw.select(rows), report
