"""A four-pair English-German corpus for the data and batch tests, their DataConfig, and text files written."""

from __future__ import annotations

import gzip
from pathlib import Path

from seq2seq.config import DataConfig

EN = ["A dog runs.", "Two cats sleep.", "A man rides a red bike.", "Children play in the park."]


DE = ["Ein Hund rennt.", "Zwei Katzen schlafen.", "Ein Mann fährt ein rotes Fahrrad.", "Kinder spielen im Park."]


def config(path: Path | str, tmp_path: Path, **kwargs) -> DataConfig:
    return DataConfig(path=str(path), cache_dir=str(tmp_path / "cache"), **kwargs)


def write(path: Path, lines: list[str], gz: bool = False, newline: str = "\n") -> Path:
    data = "".join(line + newline for line in lines).encode("utf-8")
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path
