"""scripts/sweep.py (a real two-variant sweep of the tiny recipe, read back on a second call) and
scripts/plot_time_to_quality.py (a PNG from a real run) and scripts/make_big_corpus.py (aligned pairs, the splits
beside them); scripts/fuzz_campaign.py's counts against properties whose outcomes are known, and
scripts/domain_split.py (animal captions apart, found by hand here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, TINY_OVERRIDES
from support.scripts import load_script

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_sweep_trains_each_variant_ranks_by_validation_bleu_and_reuses_finished_runs(tiny_corpus, tmp_path):
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("train.max_steps")] + [
        f"data.cache_dir={tmp_path / 'cache'}", "train.valid_every=20", "train.valid_bleu_sentences=20",
        "train.scheduler=linear"]
    variants = tmp_path / "variants.yaml"
    variants.write_text("base: configs/multi30k_en_de.yaml\nset: [" + ", ".join(overrides) + "]\nvariants:\n"
                        "  - name: lr3e-3\n    set: []\n  - name: lr1e-5\n    set: [train.lr=0.00001, train.min_lr=0.0]\n",
                        encoding="utf-8")
    out, table = tmp_path / "sweep", tmp_path / "table.md"
    command = [sys.executable, "scripts/sweep.py", "--variants", str(variants), "--data", str(tiny_corpus),
               "--steps", "40", "--out", str(out), "--table", str(table)]  # equal steps: 40 each
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
    results = {r["name"]: r for r in report["results"]}
    assert set(results) == {"lr3e-3", "lr1e-5"}
    for name, result in results.items():
        assert result["steps"] == 40 and result["best_step"] in (20, 40) and result["parameters"] > 0, name
        assert "data.test_splits" not in " ".join(result["overrides"])
        assert not (out / name / "results.json").exists(), "a sweep must not score the test splits"
        records = [json.loads(line) for line in (out / name / "train_log.jsonl").read_text().splitlines()]
        assert result["best_val_bleu"] == max(r["val_bleu"] for r in records if r["type"] == "valid")
    # a learning rate of 1e-5 cannot beat 3e-3 in 40 steps: by loss, since BLEU of so small a model may tie at 0
    loss = {name: [json.loads(line) for line in (out / name / "train_log.jsonl").read_text().splitlines()
                   if '"valid"' in line][-1]["val_loss"] for name in results}
    assert loss["lr3e-3"] < loss["lr1e-5"]
    lines = table.read_text(encoding="utf-8").splitlines()
    rows = [line for line in lines if line.startswith("| lr")]
    assert len(rows) == 2
    bleus = [float(row.split("|")[3].strip().strip("*")) for row in rows]
    assert bleus == sorted(bleus, reverse=True), "the table is ranked by validation BLEU"

    again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "-m seq2seq.train" not in again.stderr, "finished variants must be read back"


def test_sweep_parses_inline_variants():
    sweep = load_script("sweep")
    variant = sweep.parse_inline("v2k:tokenizer.vocab_size=2000; model.dropout=0.3")
    assert (variant.name, variant.overrides) == ("v2k", ["tokenizer.vocab_size=2000", "model.dropout=0.3"])
    with pytest.raises(SystemExit):
        sweep.parse_inline("bad name:model.dropout=0.3")


def test_time_to_quality_plot_from_a_real_run(tiny_model_dir, tmp_path):
    out = tmp_path / "ttq.png"
    command = [sys.executable, "scripts/plot_time_to_quality.py", "--out", str(out), f"tiny={tiny_model_dir}"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.read_bytes()[:8] == PNG_MAGIC
    results = json.loads((tiny_model_dir / "results.json").read_text(encoding="utf-8"))
    beam = results["test_2016_flickr"]["beam3"]["bleu"]
    assert f"| tiny | test test_2016_flickr beam3 | {beam:.2f} |" in done.stdout
    assert done.stdout.count("| tiny | ") == 1 + sum(1 for line in (tiny_model_dir / "train_log.jsonl").read_text()
                                                     .splitlines() if '"valid"' in line)


@pytest.mark.parametrize("name", ["cpu_round1.yaml", "cpu_round2.yaml"])
def test_shipped_sweep_files_give_valid_configs(name):
    """Every variant of a committed sweep is a config train would accept (a typo fails here, not 2 hours in)."""
    from seq2seq.config import load_config

    sweep = load_script("sweep")
    base, common, variants = sweep.load_variants(REPO_ROOT / "configs" / "sweeps" / name)
    assert base is not None and base.is_file() and variants
    assert len({v.name for v in variants}) == len(variants)
    for variant in variants:
        cfg = load_config(base, common + variant.overrides + ["train.max_minutes=20"])  # sweep.py's --minutes
        assert cfg.train.scheduler in ("linear", "plateau")


def split_into_pairs(src_line: str, tgt_line: str, translations: dict[str, set[str]], most: int) -> bool:
    """Whether the two lines are 1..``most`` Multi30k pairs joined with spaces, side by side (backtracking)."""
    if not src_line and not tgt_line:
        return True
    if most == 0 or not src_line or not tgt_line:
        return False
    words = src_line.split(" ")
    for cut in range(1, len(words) + 1):
        head, rest = " ".join(words[:cut]), " ".join(words[cut:])
        for tgt in translations.get(head, ()):
            if tgt_line == tgt or tgt_line.startswith(tgt + " "):
                if split_into_pairs(rest, tgt_line[len(tgt):].lstrip(" "), translations, most - 1):
                    return True
    return False


def test_make_big_corpus_joins_aligned_multi30k_pairs_and_is_a_training_directory(multi30k_dir, tmp_path):
    import gzip

    from seq2seq.config import DataConfig
    from seq2seq.data import read_split

    def run(out, seed: int) -> subprocess.CompletedProcess:
        command = [sys.executable, "scripts/make_big_corpus.py", "--pairs", "3000", "--seed", str(seed), "--out",
                   str(out), "--source", str(multi30k_dir)]
        return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)

    assert run(tmp_path / "a", seed=1).returncode == 0 and run(tmp_path / "b", seed=1).returncode == 0
    assert run(tmp_path / "c", seed=2).returncode == 0
    out = tmp_path / "a"
    src_lines = (out / "train.en").read_text(encoding="utf-8").splitlines()
    tgt_lines = (out / "train.de").read_text(encoding="utf-8").splitlines()
    assert len(src_lines) == len(tgt_lines) == 3000
    assert (tmp_path / "b" / "train.de").read_bytes() == (out / "train.de").read_bytes()  # a function of the seed
    assert (tmp_path / "c" / "train.de").read_bytes() != (out / "train.de").read_bytes()
    translations: dict[str, set[str]] = {}
    with gzip.open(multi30k_dir / "train.en.gz", "rt", encoding="utf-8") as en, \
            gzip.open(multi30k_dir / "train.de.gz", "rt", encoding="utf-8") as de:
        for src, tgt in zip(en, de):
            translations.setdefault(src.strip(), set()).add(tgt.strip())
    assert all(split_into_pairs(s, t, translations, most=3) for s, t in zip(src_lines, tgt_lines))
    joined = sum(line not in translations for line in src_lines)
    assert 1500 < joined < 2500  # 1, 2 or 3 pairs a line, equally often: about two thirds are joined
    for split in ("val", "test_2016_flickr", "test_2017_flickr"):
        for lang in ("en", "de"):
            assert (out / f"{split}.{lang}.gz").read_bytes() == (multi30k_dir / f"{split}.{lang}.gz").read_bytes()
    cfg = DataConfig(path=str(out), cache_dir=str(tmp_path / "cache"))
    assert len(read_split(cfg, "train")) == 3000 and len(read_split(cfg, "val")) == 1014
    bad = subprocess.run([sys.executable, "scripts/make_big_corpus.py", "--out", str(tmp_path / "e"), "--source",
                          str(tmp_path / "nowhere")], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "train.en" in bad.stderr


def test_fuzz_campaign_counts_every_example_and_each_distinct_failure(monkeypatch):
    """The campaign's counts of a passing property equal the calls it made, and a property failing in two ways
    (KeyError for multiples of 3, AssertionError for other x >= 700) counts two distinct failures."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.internal import observability

    campaign = load_script("fuzz_campaign")
    monkeypatch.setattr(observability, "OBSERVABILITY_COLLECT_COVERAGE", False)
    counts, calls = campaign.Counts(), []
    once = settings(max_examples=40, database=None, derandomize=True, deadline=None)

    @once
    @given(st.integers(0, 1000))
    def test_api_passing(x):
        calls.append(x)

    @once
    @given(st.integers(0, 1000))
    def test_http_failing(x):
        if x % 3 == 0:
            raise KeyError(x)
        assert x < 700

    observability.add_observability_callback(counts)
    try:
        test_api_passing()
        with pytest.raises(BaseException) as failure:
            test_http_failing()
    finally:
        observability.remove_observability_callback(counts)
    assert isinstance(failure.value, BaseExceptionGroup)  # Hypothesis found both
    assert sum(counts.status["test_api_passing"].values()) == len(calls) >= 40
    reasons = sorted(counts.failures["test_http_failing"])
    assert len(reasons) == 2 and reasons[0].startswith("AssertionError") and reasons[1].startswith("KeyError"), reasons
    timing = campaign.Timing()
    timing.outcome = {"test_api_passing": "passed", "test_http_failing": "failed"}
    result = campaign.summary(counts, timing, 40)
    assert result["surfaces"]["api"]["examples"] == counts.status["test_api_passing"]["generate_passed"] >= 40
    assert result["surfaces"]["http"]["distinct_failures"] == 2 and result["surfaces"]["http"]["tests_failed"] == 1


def test_domain_split_puts_the_animal_captions_apart_aligned(tmp_path):
    """Which captions are about animals is decided here by hand (whole words, any case; "hotdog" is not a dog):
    domain A gets exactly the others, in order; B's train / val / test parts are disjoint animal pairs, the same
    for the same seed; every German line stays beside its English one; too few B pairs is exit 2."""
    domain_split = load_script("domain_split")
    animal = ["A dog runs.", "Two CATS sleep.", "A man, with birds.", "A horse.", "Sheep graze.", "A puppy!",
              "Kids feed ducks.", "Dogs play.", "A cow stands.", "An elephant walks."]
    other = ["A hotdog stand.", "A woman walks.", "Catalog of a man.", "Birdhouse on a pole.", "A red car."] * 4
    source = tmp_path / "multi30k"
    source.mkdir()
    english = [line for pair in zip(animal, other[:10]) for line in pair] + other[10:]
    for split, lines in (("train", english), ("val", ["A dog.", "A man."]), ("test_2016_flickr", ["A cat.", "Sun."])):
        (source / f"{split}.en").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        (source / f"{split}.de").write_text("".join(f"DE {line}\n" for line in lines), encoding="utf-8")

    def written(out, domain, split, lang):
        return (out / domain / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()

    args = ["--source", str(source), "--b-train", "5", "--b-val", "2", "--b-test", "3"]
    assert domain_split.main([*args, "--out", str(tmp_path / "one")]) == 0
    one = tmp_path / "one"
    assert written(one, "a", "train", "en") == other
    assert written(one, "a", "val", "en") == ["A man."] and written(one, "a", "test", "en") == ["Sun."]
    parts = {split: written(one, "b", split, "en") for split in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [5, 2, 3]
    assert set(parts["train"]) | set(parts["val"]) | set(parts["test"]) == set(animal)  # disjoint, all of B
    for domain, split in (("a", "train"), ("b", "train"), ("b", "test")):
        assert written(one, domain, split, "de") == [f"DE {line}" for line in written(one, domain, split, "en")]
    counts = json.loads((one / "counts.json").read_text(encoding="utf-8"))
    assert counts["a"] == {"train": 20, "val": 1, "test": 1} and counts["b_training_pairs_in_all"] == 10
    assert domain_split.main([*args, "--out", str(tmp_path / "two")]) == 0
    assert written(tmp_path / "two", "b", "test", "en") == parts["test"]  # the same seed, the same parts
    assert domain_split.main([*args[:2], "--b-train", "9", "--out", str(tmp_path / "three")]) == 2
