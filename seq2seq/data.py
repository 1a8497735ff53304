"""Parallel corpora -> Arrow datasets of piece ids, cached and memory-mapped.

Reading (:func:`read_split`) gives a dataset with string columns ``src`` and ``tgt``, from the first of:

1. ``data.files[split] = [src_file, tgt_file]``: an explicit pair of line-aligned text files, or ``[file.tsv]``:
   one pair per line, ``source<TAB>target``; with ``data.files``, the splits it lists are the whole corpus;
2. ``data.path`` a file: a TSV file of training pairs (``--data my.tsv``); it has no other split;
3. ``data.path`` a directory of ``{split}.{lang}`` or ``{split}.{lang}.gz`` files (Multi30k / fairseq layout);
4. ``datasets.load_dataset(data.path)``: a Hugging Face hub name (``bentrevett/multi30k``) or a local
   directory ``datasets`` can read (parquet, json, csv ...), with one column per language or a WMT-style
   ``translation`` column of ``{lang: text}`` dicts.

A split that does not exist raises :class:`SplitNotFound` (training then holds out a validation split, and
:func:`test_split_names` lists the test splits a corpus has: those besides its training and validation splits).

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

#: split names tried when the requested one does not exist in a directory or file list
SPLIT_ALIASES = {"val": ("validation", "valid", "dev"), "valid": ("validation", "val", "dev"),
                 "validation": ("val", "valid", "dev"), "dev": ("val", "valid", "validation")}
#: the same for a hub dataset; ``test_2016_flickr`` -> ``test`` only for the hub copy of Multi30k, whose ``test``
#: split is test_2016_flickr (a user's own ``test`` split is never relabelled)
HUB_SPLIT_ALIASES = {**SPLIT_ALIASES, "test_2016_flickr": ("test",)}
MULTI30K_HUB = "bentrevett/multi30k"

RAW_FEATURES = datasets.Features({"src": datasets.Value("string"), "tgt": datasets.Value("string")})


class DataError(ValueError):
    """A corpus the user pointed at cannot be read: the message names the file (and line) and what to do."""


class SplitNotFound(DataError):
    """The corpus has no such split (training holds out a validation split instead; a test split is skipped)."""


# ---------------------------------------------------------------------------------------------- reading


def read_split(cfg: DataConfig, split: str) -> datasets.Dataset:
    """The sentence pairs of ``split`` as a dataset with string columns ``src`` and ``tgt``.

    Texts are stripped; pairs where either side is empty (or whitespace) are dropped (and counted in the log:
    :func:`read_split_counted` returns the count).
    """
    return read_split_counted(cfg, split)[0]


def read_split_counted(cfg: DataConfig, split: str) -> tuple[datasets.Dataset, int]:
    """(the pairs of ``split``, how many pairs were dropped for an empty or whitespace-only side)."""
    if cfg.files:
        name = next((n for n in (split, *SPLIT_ALIASES.get(split, ())) if n in cfg.files), None)
        if name is None:
            raise SplitNotFound(f"split '{split}' is not in data.files, which lists {', '.join(cfg.files)}")
        if len(cfg.files[name]) == 1:
            return _read_tsv(_existing_file(cfg.files[name][0], f"data.files.{name}"), cfg)
        src_path, tgt_path = _file_pair(cfg, name)
        return _read_text_pair(src_path, tgt_path, cfg)
    path = Path(cfg.path).expanduser()
    if path.is_file():
        if split != cfg.train_split:
            raise SplitNotFound(f"{path} is one TSV file, the training pairs: it has no split '{split}' (give "
                                f"other splits as data.files.{split}: [FILE.tsv])")
        return _read_tsv(path, cfg)
    if path.is_dir() and _has_text_files(path, cfg):
        src_path, tgt_path = _split_files(path, split, cfg)
        return _read_text_pair(src_path, tgt_path, cfg)
    if not path.exists() and path.suffix in (".tsv", ".gz", ".txt"):
        raise DataError(f"TSV file not found: {path} (config key data.path, or --data: a TSV file of "
                        "source<TAB>target lines, a directory of {split}.{lang} files, or a Hugging Face dataset name)")
    if not path.exists() and cfg.path.startswith((".", "/", "~")):
        raise DataError(f"data directory not found: {path} (config key data.path, or --data)")
    return _read_datasets(cfg, split)


def corpus_name(cfg: DataConfig) -> str:
    """A short name of the corpus for logs, run names and model cards: the training file's or directory's name
    (``my_corpus`` for ``my_corpus.tsv``), or the hub dataset's (``multi30k`` for bentrevett/multi30k)."""
    location = cfg.files[next(iter(cfg.files))][0] if cfg.files else cfg.path
    name = Path(str(location).rstrip("/")).name
    name = name.split(".")[0] if cfg.files else name  # europarl.en -> europarl
    for suffix in (".gz", ".tsv", ".txt"):
        name = name.removesuffix(suffix)
    return name or "corpus"


def test_split_names(cfg: DataConfig) -> list[str]:
    """The corpus's own test splits: every split besides the training and validation ones (none for one TSV file;
    ``test`` for the hub copy of Multi30k)."""
    not_test = {cfg.train_split, cfg.valid_split, *SPLIT_ALIASES.get(cfg.valid_split, ())}
    path = Path(cfg.path).expanduser()
    if cfg.files:
        names = list(cfg.files)
    elif path.is_file():
        names = []
    elif path.is_dir() and _has_text_files(path, cfg):
        names = sorted({p.name.split(".")[0] for p in path.iterdir()
                        if _find(path, p.name.split(".")[0], cfg.src_lang) and _find(path, p.name.split(".")[0], cfg.tgt_lang)})
    else:
        try:
            builder = datasets.load_dataset_builder(cfg.path, cache_dir=str(Path(cfg.cache_dir).expanduser() / "hf"))
            names = list(builder.info.splits or {})
        except _HUB_ERRORS:
            names = []
    return [name for name in names if name not in not_test]


def _existing_file(name: str, key: str) -> Path:
    for candidate in (Path(name).expanduser(), Path(name + ".gz").expanduser()):
        if candidate.is_file():
            return candidate
    raise DataError(f"{key}: file not found: {Path(name).expanduser()} or {Path(name + '.gz').expanduser()}")


def _file_pair(cfg: DataConfig, split: str) -> tuple[Path, Path]:
    pair = cfg.files[split]
    if len(pair) != 2:
        raise DataError(f"data.files.{split} must be [source_file, target_file] or [pairs.tsv], got {pair!r}")
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
    raise SplitNotFound(
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
    line_no = 0
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
                yield {"src": src, "tgt": tgt}
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataError(f"{src_path} / {tgt_path}: a gzip file is damaged near line {line_no}: {err}") from None


def _tsv_pairs(path: str, stamp: str, src_lang: str, tgt_lang: str) -> Iterator[dict[str, str]]:
    """Yield ``{"src", "tgt"}`` from ``source<TAB>target`` lines; a first line that names the two languages is a
    header (in the order ``tgt_lang<TAB>src_lang`` it swaps the columns)."""
    path_, swap, line_no = Path(path), False, 0
    try:
        with _open_lines(path_) as lines:
            for line_no, raw in enumerate(lines, start=1):
                fields = [field.strip() for field in _decode(raw, path_, line_no).split("\t")]
                if line_no == 1 and fields in ([src_lang, tgt_lang], [tgt_lang, src_lang]):
                    swap = fields[0] == tgt_lang
                    continue
                if fields == [""]:
                    yield {"src": "", "tgt": ""}  # an empty line: counted with the empty pairs
                    continue
                if len(fields) != 2:
                    raise DataError(f"{path_}:{line_no}: {len(fields)} tab-separated field(s); a TSV corpus has "
                                    "two per line, source<TAB>target (with other columns, keep two: cut -f1,2)")
                yield {"src": fields[1], "tgt": fields[0]} if swap else {"src": fields[0], "tgt": fields[1]}
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataError(f"{path_}: a gzip file is damaged near line {line_no}: {err}") from None


def _read_tsv(path: Path, cfg: DataConfig) -> tuple[datasets.Dataset, int]:
    stamp = f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
    return _generated(_tsv_pairs, {"path": str(path), "stamp": stamp, "src_lang": cfg.src_lang,
                                   "tgt_lang": cfg.tgt_lang}, cfg, str(path))


def _read_text_pair(src_path: Path, tgt_path: Path, cfg: DataConfig) -> tuple[datasets.Dataset, int]:
    """Stream two text files into a cached Arrow dataset (rebuilt when either file changes)."""
    stamp = " ".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in (src_path, tgt_path))
    return _generated(_text_pairs, {"src_path": str(src_path), "tgt_path": str(tgt_path), "stamp": stamp}, cfg,
                      f"{src_path} / {tgt_path}")


def _generated(generator, gen_kwargs: dict, cfg: DataConfig, where: str) -> tuple[datasets.Dataset, int]:
    """The pairs ``generator`` yields, as a cached Arrow dataset without the pairs with an empty side; and their
    count."""
    try:
        dataset = datasets.Dataset.from_generator(generator, features=RAW_FEATURES, gen_kwargs=gen_kwargs,
                                                  cache_dir=str(Path(cfg.cache_dir).expanduser() / "text"))
    except datasets.exceptions.DatasetGenerationError as err:
        raise _data_error_in(err) from None
    except ValueError as err:  # `datasets` refuses a generator that yields nothing ("... corresponds to no data!")
        if isinstance(err, DataError):
            raise
        reason = "no sentence pairs (both sides non-empty)" if "no data" in str(err) else f"cannot be read ({err})"
        raise DataError(f"{where}: {reason} in these files") from None
    kept = dataset.filter(_both_sides_non_empty, batched=True, input_columns=["src", "tgt"])
    if len(kept) == 0:
        raise DataError(f"{where}: no sentence pairs (both sides non-empty) in these files")
    if len(kept) < len(dataset):
        logger.info("%s: dropped %d pairs with an empty side", where, len(dataset) - len(kept))
    logger.info("read %d pairs from %s", len(kept), where)
    return kept, len(dataset) - len(kept)


def _data_error_in(err: BaseException) -> BaseException:
    """The :class:`DataError` that ``datasets`` wrapped in ``err`` (``err`` itself when there is none)."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, DataError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return err


_HUB_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError, datasets.exceptions.DatasetsError)


def _read_datasets(cfg: DataConfig, split: str) -> tuple[datasets.Dataset, int]:
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
    aliases = HUB_SPLIT_ALIASES if cfg.path == MULTI30K_HUB else SPLIT_ALIASES
    name = next((s for s in (split, *aliases.get(split, ())) if s in available), None)
    if name is None:
        raise SplitNotFound(f"dataset '{cfg.path}' has no split '{split}'; available splits: {', '.join(available)}")
    dataset = builder.as_dataset(split=name)
    return _select_languages(dataset, cfg, f"{cfg.path} [{name}]")


def _select_languages(dataset: datasets.Dataset, cfg: DataConfig, where: str) -> tuple[datasets.Dataset, int]:
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
    return kept, len(texts) - len(kept)


def _both_sides_non_empty(src: list[str], tgt: list[str]) -> list[bool]:
    return [bool(s and t) for s, t in zip(src, tgt)]


def _strip_all(texts) -> list[str]:
    return [(t or "").strip() for t in texts]
