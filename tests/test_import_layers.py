"""Imports point down: every module of the package sits in a layer, and every import of another seq2seq module
(at the top of a file, inside a function, under ``TYPE_CHECKING``) names a lower layer. Read from the source with
``ast``, so lazy imports count. Cheap: text only."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: bottom first; one line per layer. A unit is a top-level module or a sub-package (``decoding``: every module in
#: seq2seq/decoding/); modules of one sub-package may import each other. ``seq2seq`` is the package's public surface
#: (its __init__), above everything it re-exports.
LAYERS = [
    "rank_metrics",
    # settings, and helpers that import nothing of seq2seq
    "config hardware lines metrics plots quantize additive_scores cells dropout gate_norm decoding_model",
    # the network, part on part; text to ids
    "tokenizer data rnn attention cleaning calibration",
    "encoder precision padding tokenized_corpus model_card protected_spans",
    "decoder token_batches glossary dtype_auto",
    "model segmentation",
    # model directories: saved, on the Hub, exported; loaded for inference
    "checkpoint",
    "hub onnx_graphs",
    "onnx_export",
    "onnx_runtime",
    "backends decoding",
    "sentence_confidence translation",
    "translator_inputs",
    # training (its validation decodes) and the Python API on decoding; what builds on them
    "training translator command_line",
    "serving final_evaluation bench calibrate distillation distilled_corpus",
    # command lines
    "train translate evaluate score serve push",
    # the command lines that run others (distill: translation, then training)
    "distill",
    "seq2seq",
]
LAYER = {unit: level for level, line in enumerate(LAYERS) for unit in line.split()}


def module_name(path: Path, root: Path) -> str:
    """seq2seq/decoding/search.py -> seq2seq.decoding.search; seq2seq/decoding/__init__.py -> seq2seq.decoding."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted((root / "seq2seq").rglob("*.py"))}


def unit_of(module: str) -> str:
    """The layer unit of a module: its top-level module or sub-package (``seq2seq`` for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, seq2seq module) for every import in the file, wherever it is (relative imports resolved;
    ``from seq2seq.x import y`` names ``seq2seq.x.y`` when that is a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "seq2seq"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "seq2seq":
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.append((node.lineno, submodule if submodule in modules else source))
    return sorted(set(found))


def upward_imports(root: Path = ROOT) -> list[str]:
    """Imports that do not point to a lower layer (between units), as 'file:line: a imports b (layer i -> j)'."""
    modules = package_modules(root)
    wrong = []
    for module, path in modules.items():
        for line, target in imports_of(module, path, modules):
            source_unit, target_unit = unit_of(module), unit_of(target)
            if source_unit == target_unit:
                continue
            if LAYER.get(target_unit, len(LAYERS)) >= LAYER.get(source_unit, -1):
                wrong.append(f"{path.relative_to(root)}:{line}: {module} imports {target} "
                             f"(layer {LAYER.get(source_unit)} -> {LAYER.get(target_unit)})")
    return wrong


def test_every_module_has_a_layer():
    units = {unit_of(module) for module in package_modules()}
    assert not units - set(LAYER), f"modules without a layer (add them to LAYERS): {sorted(units - set(LAYER))}"
    assert not set(LAYER) - units, f"LAYERS names modules that do not exist: {sorted(set(LAYER) - units)}"
    assert len(LAYER) == sum(len(line.split()) for line in LAYERS), "a unit is named in two layers"


def test_every_import_points_to_a_lower_layer():
    wrong = upward_imports()
    assert not wrong, "imports that point up or sideways (move the code down, or hand it in):\n" + "\n".join(wrong)


def test_planted_upward_imports_are_caught(tmp_path):
    """A lazy import inside a function (the shape precision.py had), a relative import, and an import of the
    public surface from below: each is reported with its file and line."""
    shutil.copytree(ROOT / "seq2seq", tmp_path / "seq2seq", ignore=shutil.ignore_patterns("__pycache__", "static"))
    planted = {
        "seq2seq/precision.py": "\n\ndef work():\n    from seq2seq.training.step import train_step\n",
        "seq2seq/decoding/logits.py": "\nfrom .. import translator\n",
        "seq2seq/model.py": "\nfrom seq2seq import Translator\n",
    }
    for name, code in planted.items():
        with (tmp_path / name).open("a", encoding="utf-8") as file:
            file.write(code)
    wrong = upward_imports(tmp_path)
    assert len(wrong) == 3, wrong
    assert any(w.startswith("seq2seq/precision.py:") and f"imports seq2seq.training.step (layer {LAYER['precision']} -> {LAYER['training']})" in w
               for w in wrong), wrong
    assert any(w.startswith("seq2seq/decoding/logits.py:") and "imports seq2seq.translator" in w for w in wrong)
    assert any(w.startswith("seq2seq/model.py:") and f"imports seq2seq (layer {LAYER['model']} -> {LAYER['seq2seq']})" in w for w in wrong)


def test_sideways_imports_between_units_of_one_layer_are_caught(tmp_path):
    shutil.copytree(ROOT / "seq2seq", tmp_path / "seq2seq", ignore=shutil.ignore_patterns("__pycache__", "static"))
    with (tmp_path / "seq2seq" / "training" / "step.py").open("a", encoding="utf-8") as file:
        file.write("\nimport seq2seq.translator\n")
    assert [w.split(": ", 1)[1] for w in upward_imports(tmp_path)] == [
        f"seq2seq.training.step imports seq2seq.translator (layer {LAYER['training']} -> {LAYER['translator']})"]
