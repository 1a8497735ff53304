"""``--compare`` variants: named sets of config overrides and a compute dtype, measured side by side in one
process (``fp32,bf16,auto`` or ``name:section.key=value;...``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from seq2seq.config import DTYPES, ConfigError  # DTYPES: the compute dtypes a variant may ask for (``auto`` too)

__all__ = ["DTYPES", "Variant", "parse_variants"]


@dataclass
class Variant:
    """A named set of config overrides and a compute dtype (``fp32`` | ``bf16``)."""

    name: str
    overrides: list[str] = field(default_factory=list)
    dtype: str = "fp32"


def parse_variants(spec: str | None, default_dtype: str) -> list[Variant]:
    """``fp32,bf16`` or ``name:section.key=value;section.key=value,...`` (``dtype=bf16`` allowed as a key)."""
    if not spec:
        return [Variant("baseline", [], default_dtype)]
    variants = []
    for item in _split_top_level(spec):
        name, _, body = item.partition(":")
        name = name.strip()
        if not body and name in DTYPES:  # "fp32,bf16,auto"
            variants.append(Variant(name, [], name))
            continue
        if not body and "=" in name:  # a bare override names itself
            name, body = name, name
        variant = Variant(name, [], default_dtype)
        for text in filter(None, (part.strip() for part in body.split(";"))):
            if text.startswith("dtype="):
                variant.dtype = text.split("=", 1)[1].strip()
                if variant.dtype not in DTYPES:
                    raise ConfigError(f"--compare {name}: dtype must be one of {', '.join(DTYPES)}, got {variant.dtype!r}")
            else:
                variant.overrides.append(text)
        variants.append(variant)
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ConfigError(f"--compare: variant names must differ, got {names}")
    return variants


def _split_top_level(spec: str) -> list[str]:
    """Split on commas outside brackets (override values may be YAML lists)."""
    items, depth, current = [], 0, ""
    for char in spec:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    return [item.strip() for item in items if item.strip()]
