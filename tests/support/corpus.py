"""A four-pair English-German corpus for the data and batch tests, and their DataConfig."""

from __future__ import annotations

from pathlib import Path

from seq2seq.config import DataConfig

EN = ["A dog runs.", "Two cats sleep.", "A man rides a red bike.", "Children play in the park."]


DE = ["Ein Hund rennt.", "Zwei Katzen schlafen.", "Ein Mann fährt ein rotes Fahrrad.", "Kinder spielen im Park."]


def config(path: Path | str, tmp_path: Path, **kwargs) -> DataConfig:
    return DataConfig(path=str(path), cache_dir=str(tmp_path / "cache"), **kwargs)
