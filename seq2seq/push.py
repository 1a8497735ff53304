"""Push a model directory to the Hugging Face Hub, with a generated model card.

    python -m seq2seq.push --model runs/multi30k_en_de --repo ORG/NAME               # create/update ORG/NAME
    python -m seq2seq.push --model runs/multi30k_en_de --repo ORG/NAME --dry-run     # print the files and the card

Uploads ``config.yaml``, both tokenizers, ``model.safetensors``, and ``results.json``, ``train_log.jsonl``,
``curves.png``, ``distillation.json`` (a distilled student's teachers) when present, plus ``README.md`` (the card:
languages, ``pipeline_tag: translation``, the dataset, a config summary and the test scores with their sacreBLEU
signatures), in one commit, which also deletes the files an older push left and this one does not write (e.g. ONNX
graphs of older weights). Never the training state (``last/``). Log in first with ``hf auth login`` (or set
``HF_TOKEN``). Load it back with ``--model hf:ORG/NAME`` (see seq2seq/hub.py).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seq2seq.push", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory to push")
    parser.add_argument("--repo", required=True, help="Hub repository id, ORG/NAME (created if needed)")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--dataset", help="dataset name on the card (default: the basename of data.path)")
    parser.add_argument("--license", help="license identifier on the card, e.g. mit, cc-by-4.0")
    parser.add_argument("--message", help="commit message")
    parser.add_argument("--dry-run", action="store_true", help="print the files and the card; upload nothing")
    args = parser.parse_args(argv)

    from seq2seq.checkpoint import CheckpointError
    from seq2seq.hub import CARD_FILE, push_model_dir, push_operations

    try:
        if args.dry_run:
            operations = push_operations(args.model, args.repo, dataset=args.dataset, license=args.license)
            for op in operations:
                print(op.path_in_repo)
            card = next(op for op in operations if op.path_in_repo == CARD_FILE)
            print(f"\n--- {CARD_FILE} ---\n{card.path_or_fileobj.decode('utf-8')}")
            return 0
        url = push_model_dir(args.model, args.repo, private=args.private, dataset=args.dataset,
                             license=args.license, message=args.message)
    except (CheckpointError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"pushed {args.model} to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
