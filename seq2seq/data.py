"""Parallel corpora -> Arrow datasets of piece ids, cached and memory-mapped.

Reading (:func:`read_split`) gives a dataset with string columns ``src`` and ``tgt``, from the first of:

1. ``data.files[split] = [src_file, tgt_file]``: an explicit pair of line-aligned text files;
2. ``data.path`` a directory of ``{split}.{lang}`` or ``{split}.{lang}.gz`` files (Multi30k / fairseq layout);
3. ``datasets.load_dataset(data.path)``: a Hugging Face hub name (``bentrevett/multi30k``) or a local
   directory ``datasets`` can read (parquet, json, csv ...), with one column per language or a WMT-style
   ``translation`` column of ``{lang: text}`` dicts.

Text files are streamed into an Arrow file under ``data.cache_dir`` (never held in memory), memory-mapped and
cached: a second run with the same files reads the cache. The corpus as piece ids is
:mod:`seq2seq.tokenized_corpus`; the batches cut from it are :mod:`seq2seq.token_batches`.
"""

from __future__ import annotations

import gzip
import itertools
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path

import datasets

from seq2seq.config import DataConfig

logger = logging.getLogger(__name__)

#: split names tried when the requested one does not exist (Multi30k file names -> hub names)
SPLIT_ALIASES = {"val": ("validation",), "valid": ("validation",), "test_2016_flickr": ("test",)}

RAW_FEATURES = datasets.Features({"src": datasets.Value("string"), "tgt": datasets.Value("string")})


class DataError(ValueError):
    """A corpus the user pointed at cannot be read: the message names the file (and line) and what to do."""


# ---------------------------------------------------------------------------------------------- reading


def read_split(cfg: DataConfig, split: str) -> datasets.Dataset:
    """The sentence pairs of ``split`` as a dataset with string columns ``src`` and ``tgt``.

    Texts are stripped; pairs where either side is empty are dropped (and counted in the log).
    """
    if split in cfg.files:
        src_path, tgt_path = _file_pair(cfg, split)
        return _read_text_pair(src_path, tgt_path, cfg)
    path = Path(cfg.path).expanduser()
    if path.is_dir() and _has_text_files(path, cfg):
        src_path, tgt_path = _split_files(path, split, cfg)
        return _read_text_pair(src_path, tgt_path, cfg)
    if not path.exists() and cfg.path.startswith((".", "/", "~")):
        raise DataError(f"data directory not found: {path} (config key data.path, or --data)")
    return _read_datasets(cfg, split)


def _file_pair(cfg: DataConfig, split: str) -> tuple[Path, Path]:
    pair = cfg.files[split]
    if len(pair) != 2:
        raise DataError(f"data.files.{split} must be [source_file, target_file], got {pair!r}")
    found, missing = [], []
    for name in pair:
        candidates = [Path(name).expanduser(), Path(name + ".gz").expanduser()]
        hit = next((c for c in candidates if c.is_file()), None)
        found.append(hit)
        if hit is None:
            missing.append(" or ".join(map(str, candidates)))
    if missing:
        raise DataError(f"data.files.{split}: file not found: {'; '.join(missing)}")
    return found[0], found[1]


def _has_text_files(directory: Path, cfg: DataConfig) -> bool:
    """Whether ``directory`` holds ``*.{lang}`` / ``*.{lang}.gz`` files for either language."""
    return any(
        next(directory.glob(f"*.{lang}{ext}"), None) is not None
        for lang in (cfg.src_lang, cfg.tgt_lang)
        for ext in ("", ".gz")
    )


def _find(directory: Path, name: str, lang: str) -> Path | None:
    for ext in ("", ".gz"):
        path = directory / f"{name}.{lang}{ext}"
        if path.is_file():
            return path
    return None


def _split_files(directory: Path, split: str, cfg: DataConfig) -> tuple[Path, Path]:
    """``({split}.{src_lang}[.gz], {split}.{tgt_lang}[.gz])`` in ``directory``, trying :data:`SPLIT_ALIASES`."""
    for name in (split, *SPLIT_ALIASES.get(split, ())):
        src, tgt = _find(directory, name, cfg.src_lang), _find(directory, name, cfg.tgt_lang)
        if src is not None and tgt is not None:
            return src, tgt
        if src is not None or tgt is not None:
            lang = cfg.tgt_lang if src is not None else cfg.src_lang
            raise DataError(
                f"split '{split}': found {src or tgt} but not its translation; looked for "
                f"{directory / f'{name}.{lang}'} or {directory / f'{name}.{lang}.gz'}"
            )
    available = sorted(
        {p.name.split(".")[0] for lang in (cfg.src_lang, cfg.tgt_lang) for p in directory.glob(f"*.{lang}*")}
    )
    raise DataError(
        f"split '{split}' not found in {directory}: looked for {directory / f'{split}.{cfg.src_lang}'} or "
        f"{directory / f'{split}.{cfg.src_lang}.gz'}; splits available for {cfg.src_lang}/{cfg.tgt_lang}: "
        f"{', '.join(available) or 'none'} (set data.train_split / data.valid_split / data.test_splits)"
    )


def _open_lines(path: Path):
    """A binary line iterator over a plain or gzip file (gzip is recognised by its magic bytes)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _decode(raw: bytes, path: Path, line_no: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}:{line_no}: not valid UTF-8 (byte {raw[err.start:err.start + 1]!r} at column {err.start + 1}); "
            "convert the file to UTF-8, e.g. with iconv -f <encoding> -t utf-8"
        ) from None
    if line_no == 1:
        text = text.lstrip("\ufeff")  # a byte-order mark is not part of the sentence
    return text.strip()  # also removes the '\r' of CRLF line endings


def _count_rest(lines) -> int:
    return sum(1 for _ in lines)


def _text_pairs(src_path: str, tgt_path: str, stamp: str) -> Iterator[dict[str, str]]:
    """Yield ``{"src", "tgt"}`` from two line-aligned files read in lockstep (``stamp`` only keys the cache)."""
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    dropped = line_no = 0
    try:
        with _open_lines(src_path) as src_file, _open_lines(tgt_path) as tgt_file:
            for line_no, (src_raw, tgt_raw) in enumerate(itertools.zip_longest(src_file, tgt_file), start=1):
                if src_raw is None or tgt_raw is None:
                    src_count = line_no - 1 + (src_raw is not None) + _count_rest(src_file)
                    tgt_count = line_no - 1 + (tgt_raw is not None) + _count_rest(tgt_file)
                    raise DataError(
                        f"the files are not line-aligned: {src_path} has {src_count} lines but {tgt_path} has "
                        f"{tgt_count}; line N of one must be the translation of line N of the other"
                    )
                src, tgt = _decode(src_raw, src_path, line_no), _decode(tgt_raw, tgt_path, line_no)
                if not src or not tgt:
                    dropped += 1
                    continue
                yield {"src": src, "tgt": tgt}
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataError(f"{src_path} / {tgt_path}: a gzip file is damaged near line {line_no}: {err}") from None
    if dropped:
        logger.info("%s / %s: dropped %d pairs with an empty side", src_path, tgt_path, dropped)


def _read_text_pair(src_path: Path, tgt_path: Path, cfg: DataConfig) -> datasets.Dataset:
    """Stream two text files into a cached Arrow dataset (rebuilt when either file changes)."""
    stamp = " ".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in (src_path, tgt_path))
    try:
        dataset = datasets.Dataset.from_generator(
            _text_pairs,
            features=RAW_FEATURES,
            cache_dir=str(Path(cfg.cache_dir).expanduser() / "text"),
            gen_kwargs={"src_path": str(src_path), "tgt_path": str(tgt_path), "stamp": stamp},
        )
    except datasets.exceptions.DatasetGenerationError as err:
        raise _data_error_in(err) from None
    except ValueError as err:  # `datasets` refuses a generator that yields nothing ("... corresponds to no data!")
        if isinstance(err, DataError):
            raise
        reason = "no sentence pairs (both sides non-empty)" if "no data" in str(err) else f"cannot be read ({err})"
        raise DataError(f"{src_path} / {tgt_path}: {reason} in these files") from None
    if len(dataset) == 0:
        raise DataError(f"{src_path} / {tgt_path}: no sentence pairs (both sides non-empty) in these files")
    logger.info("read %d pairs from %s / %s", len(dataset), src_path, tgt_path)
    return dataset


def _data_error_in(err: BaseException) -> BaseException:
    """The :class:`DataError` that ``datasets`` wrapped in ``err`` (``err`` itself when there is none)."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, DataError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return err


_HUB_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError, datasets.exceptions.DatasetsError)


def _read_datasets(cfg: DataConfig, split: str) -> datasets.Dataset:
    """Read ``split`` with ``datasets`` (hub name or local ``datasets`` directory), as columns ``src``/``tgt``."""
    try:
        builder = datasets.load_dataset_builder(cfg.path, cache_dir=str(Path(cfg.cache_dir).expanduser() / "hf"))
        builder.download_and_prepare()
    except _HUB_ERRORS as err:
        if Path(cfg.path).expanduser().is_dir():
            raise DataError(
                f"{cfg.path}: no {{split}}.{cfg.src_lang} / {{split}}.{cfg.tgt_lang} text files, and `datasets` "
                f"cannot read it either ({type(err).__name__}: {err})"
            ) from err
        raise DataError(
            f"could not load the dataset '{cfg.path}': the Hugging Face hub could not be reached or has no such "
            f"dataset ({type(err).__name__}: {err}). To use local files, pass a directory of {{split}}.{{lang}}[.gz] "
            f"files, e.g. --data ../shared/data/multi30k (config key data.path), or file pairs in data.files"
        ) from err
    available = list(builder.info.splits or {})
    name = next((s for s in (split, *SPLIT_ALIASES.get(split, ())) if s in available), None)
    if name is None:
        raise DataError(f"dataset '{cfg.path}' has no split '{split}'; available splits: {', '.join(available)}")
    dataset = builder.as_dataset(split=name)
    return _select_languages(dataset, cfg, f"{cfg.path} [{name}]")


def _select_languages(dataset: datasets.Dataset, cfg: DataConfig, where: str) -> datasets.Dataset:
    """Columns ``src``/``tgt`` (stripped, empty pairs dropped) from per-language or ``translation`` columns."""
    src_lang, tgt_lang = cfg.src_lang, cfg.tgt_lang
    columns = dataset.column_names
    if src_lang in columns and tgt_lang in columns:

        def pick(batch: dict[str, list]) -> dict[str, list[str]]:
            return {"src": _strip_all(batch[src_lang]), "tgt": _strip_all(batch[tgt_lang])}

    elif "translation" in columns:
        feature = dataset.features["translation"]
        langs = list(getattr(feature, "languages", None) or (feature.keys() if isinstance(feature, dict) else []))
        if src_lang not in langs or tgt_lang not in langs:
            raise DataError(
                f"{where}: the 'translation' column has languages {', '.join(langs)}; "
                f"data.src_lang={src_lang} / data.tgt_lang={tgt_lang} must be among them"
            )

        def pick(batch: dict[str, list]) -> dict[str, list[str]]:
            pairs = batch["translation"]
            return {"src": _strip_all(p[src_lang] for p in pairs), "tgt": _strip_all(p[tgt_lang] for p in pairs)}

    else:
        raise DataError(
            f"{where}: no columns for {src_lang} and {tgt_lang}; the columns are {', '.join(columns)}. Expected one "
            f"column per language (data.src_lang / data.tgt_lang) or a 'translation' column of {{lang: text}} dicts"
        )
    texts = dataset.map(pick, batched=True, remove_columns=columns, features=RAW_FEATURES, desc="selecting languages")
    kept = texts.filter(_both_sides_non_empty, batched=True, input_columns=["src", "tgt"])
    if len(kept) < len(texts):
        logger.info("%s: dropped %d pairs with an empty side", where, len(texts) - len(kept))
    if len(kept) == 0:
        raise DataError(f"{where}: no sentence pairs with both sides non-empty")
    return kept


def _both_sides_non_empty(src: list[str], tgt: list[str]) -> list[bool]:
    return [bool(s and t) for s, t in zip(src, tgt)]


def _strip_all(texts) -> list[str]:
    return [(t or "").strip() for t in texts]
