"""The Hugging Face Hub model card (``README.md``) of a model directory, generated from its files.

The YAML front matter is what the Hub indexes: ``language`` (source and target), ``pipeline_tag: translation``,
``library_name: seq2seq``, ``datasets``, ``tags``, and a ``model-index`` with one evaluation result per test split,
decoding mode and metric from ``results.json`` (BLEU and chrF, each with its sacreBLEU signature in the metric's
``args``). The body repeats the scores in a table, summarises the config and shows how to load the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seq2seq.config import Config

#: the ``library_name`` of models pushed by this toolkit
LIBRARY_NAME = "seq2seq"
RESULTS_FILE = "results.json"
#: a distilled student's record of its teachers (``python -m seq2seq.distill``, docs/distillation.md)
DISTILLATION_FILE = "distillation.json"


def load_results(model_dir: Path) -> dict[str, Any]:
    """``results.json`` of a model directory ({split: {mode: {bleu, chrf, bleu_signature, ...}}}), {} if absent."""
    path = Path(model_dir) / RESULTS_FILE
    if not path.is_file():
        return {}
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-run `python -m seq2seq.evaluate` or remove it") from None
    if not isinstance(results, dict):
        raise ValueError(f"{path} does not hold {{split: {{mode: scores}}}}; re-run the evaluation or remove it")
    return results


def distillation_summary(model_dir: Path) -> dict[str, str]:
    """``{"distilled from": ...}`` naming the teachers (with their weights' SHA-256), beam size and training data of
    a student trained by ``python -m seq2seq.distill`` (its ``distillation.json``); {} for any other model."""
    path = Path(model_dir) / DISTILLATION_FILE
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        teachers = ", ".join(f"`{t['model']}` (weights SHA-256 {t['weights_sha256'][:12]}…)"
                             for t in record["teachers"])
        data = "the distilled and the original pairs" if record["with_references"] else "the distilled pairs"
        return {"distilled from": f"{teachers}: sequence-level knowledge distillation, the teachers' beam-"
                                  f"{record['beam_size']} translations of the training sources; trained on {data}"}
    except (ValueError, KeyError, TypeError):
        return {}


def config_summary(cfg: Config) -> dict[str, Any]:
    """The architecture and training settings a reader of the card wants, as a flat dict."""
    m, t = cfg.model, cfg.train
    return {
        "architecture": f"{m.rnn_type.upper()} encoder-decoder with {m.attention} attention",
        "encoder": f"{m.encoder_layers} x {'bi' if m.bidirectional else 'uni'}directional {m.rnn_type}, "
                   f"{m.encoder_hidden_size} units",
        "decoder": f"{m.decoder_layers} x {m.rnn_type}, {m.decoder_hidden_size} units, "
                   f"input feeding {'on' if m.input_feeding else 'off'}, bridge {m.bridge}",
        "embeddings": f"{m.emb_size}{' (tied)' if m.tie_embeddings else ''}",
        "tokenizer": f"SentencePiece {cfg.tokenizer.type}, {cfg.tokenizer.vocab_size} pieces"
                     f"{' (joint)' if cfg.tokenizer.joint else ''}",
        "optimizer": f"{t.optimizer}, lr {t.lr}, {t.scheduler} schedule, label smoothing {t.label_smoothing}",
        "decoding": f"beam {cfg.decode.beam_size}, length penalty {cfg.decode.length_penalty}",
        **({"initialized from": f"{t.init_from} (fine-tuned: its weights, tokenizers and architecture)"}
           if t.init_from else {}),
    }


def _hub_base_model(init_from: str) -> str | None:
    """The Hub id (``ORG/NAME``) a model was fine-tuned from, for the card's ``base_model``; None otherwise."""
    if not init_from.startswith("hf:"):
        return None
    return init_from[len("hf:"):].partition("@")[0]


def eval_results(results: dict[str, Any], src_lang: str, tgt_lang: str, dataset: str) -> list:
    """One ``huggingface_hub.EvalResult`` per (test split, decoding mode, metric) in ``results``."""
    from huggingface_hub import EvalResult

    out = []
    for split, modes in results.items():
        for mode, scores in modes.items():
            for metric in ("bleu", "chrf"):
                if metric not in scores:
                    continue
                out.append(EvalResult(
                    task_type="translation", task_name=f"Translation {src_lang}-{tgt_lang}",
                    dataset_type=dataset, dataset_name=f"{dataset} {split}", dataset_split=split,
                    dataset_args={"source": src_lang, "target": tgt_lang},
                    metric_type=metric, metric_value=scores[metric],
                    metric_name=f"{'BLEU' if metric == 'bleu' else 'chrF'} ({mode})",
                    metric_args={"signature": scores.get(f"{metric}_signature", ""),
                                 "beam_size": scores.get("beam_size")},
                ))
    return out


def model_card(model_dir: str | Path, cfg: Config, repo_id: str, dataset: str | None = None,
               license: str | None = None) -> str:
    """The text of ``README.md`` for ``model_dir`` pushed as ``repo_id`` (``dataset``: default the corpus's name,
    :func:`seq2seq.data.corpus_name`, e.g. ``multi30k``)."""
    from huggingface_hub import ModelCardData

    model_dir = Path(model_dir)
    src, tgt = cfg.data.src_lang, cfg.data.tgt_lang
    from seq2seq.data import corpus_name  # imports `datasets`: only when a card is written

    dataset = dataset or corpus_name(cfg.data)
    results = load_results(model_dir)
    name = repo_id.split("/")[-1]
    data = ModelCardData(
        language=[src, tgt], license=license, library_name=LIBRARY_NAME, pipeline_tag="translation",
        datasets=[dataset], tags=["translation", "rnn", cfg.model.rnn_type, "attention", LIBRARY_NAME],
        model_name=name, eval_results=eval_results(results, src, tgt, dataset) or None,
        base_model=_hub_base_model(cfg.train.init_from),
    )
    summary = {**config_summary(cfg), **distillation_summary(model_dir)}
    lines = ["---", data.to_yaml().rstrip(), "---", "", f"# {name}", "",
             f"A recurrent {src}→{tgt} translation model trained with the seq2seq toolkit on {dataset}"
             + (f", fine-tuned from `{cfg.train.init_from}`." if cfg.train.init_from else "."), "",
             "## Model", "", *[f"- **{key}**: {value}" for key, value in summary.items()], ""]
    if results:
        lines += ["## Test scores (sacreBLEU)", "", "| split | decoding | BLEU | chrF | BLEU signature |",
                  "|---|---|---|---|---|"]
        for split, modes in results.items():
            for mode, scores in modes.items():
                lines.append(f"| {split} | {mode} | {scores.get('bleu', '')} | {scores.get('chrf', '')} | "
                             f"`{scores.get('bleu_signature', '')}` |")
        lines.append("")
    lines += ["## Use", "", "```python", "from seq2seq.translator import Translator", "",
              f'translator = Translator.load("hf:{repo_id}")', 'print(translator.translate("a dog runs in the park"))',
              "```", "", "or on the command line:", "", "```bash",
              f'python -m seq2seq.translate --model hf:{repo_id} "a dog runs in the park"', "```", "",
              "The files are a seq2seq model directory: `config.yaml`, two SentencePiece models and "
              "`model.safetensors` (no pickle); loading checks every tensor's name and shape first.", ""]
    return "\n".join(lines)
