"""Training: ``python -m seq2seq.train`` is the command; these modules are its parts, read in this order.

- :mod:`~seq2seq.training.arguments`: the command line, turned into a :class:`~seq2seq.config.Config`;
- :mod:`~seq2seq.training.prepare`: a run's data (tokenizers, tokenized corpus, batch sampler, validation set);
- :mod:`~seq2seq.training.run`: model, optimizer, schedule, EMA and the step counters of one run;
- :mod:`~seq2seq.training.step`: one optimizer step (forward, loss, backward, clip, update);
- :mod:`~seq2seq.training.validation`: validation loss and greedy BLEU/chrF;
- :mod:`~seq2seq.training.model_selection`: which weights (raw or averaged) become the model, early stopping;
- :mod:`~seq2seq.training.optimizer`: optimizers, learning-rate schedules, the weight average;
- :mod:`~seq2seq.training.saved_state`: the training state in ``last/``, written whole or not at all;
- :mod:`~seq2seq.training.resume`: safe stops, and what an exact ``--resume`` may not change;
- :mod:`~seq2seq.training.distributed`: several processes under torchrun (DDP);
- :mod:`~seq2seq.training.tensorboard`: the training log's scalars as TensorBoard events (``--tensorboard``).
"""


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite losses, nothing to resume, ...); the message says why."""
