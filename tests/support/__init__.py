"""Helpers shared by several test files (fixtures stay in tests/conftest.py).

- ``cli``: run a ``python -m seq2seq.X`` command line as a subprocess and read its output lines;
- ``runs``: the tiny training config and readers of a run directory (its log, its weights);
- ``scripts``: import a file of scripts/ as a module;
- ``serving``: start ``python -m seq2seq.serve`` on a free port and talk JSON to it;
- ``chromium``: drive a headless Chromium over the DevTools protocol;
- ``tiny_models``: small random models and exact references (teacher-forced scores, every output, GNMT penalty).
"""
