"""``--peers opennmt``: OpenNMT-py 3.5.1 trained on this machine in the same run by
``../shared/peers/opennmt/speed.sh``, whose stdout ends with its median target tokens/s::

    Step 10 bsz(src/tgt/sents) 3281/3784/285 tgt_tok/s 293 at 129 s      (one line per report, every 10 steps)
    opennmt_parameters 12074560 (JoeyNMT 2.3.0 on this workload: 12262912); reports: 5
    opennmt_target_tokens_per_s 1192

Its report lines carry OpenNMT-py's own batch averages (``bsz``: source tokens / real target tokens incl. EOS /
sentences per batch over the last 10 steps): the real target tokens per batch come from there.

With ``--peer-decode`` the harness keeps its model (``ONMT_RUN``, ``ONMT_SAVE_STEPS``) and ``onmt_translate`` from
the harness's virtual environment decodes with it (:data:`OPENNMT_DECODER`): source pieces in, target pieces out,
its own timer (``-report_time``) read from its log.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from statistics import median
from typing import Any, Optional

from seq2seq.bench.peer_decoding import PeerDecoder
from seq2seq.bench.peers import PeerCorpus, PeerError, PeerToolkit, peer_dir, shared_vocabularies

REPORT = re.compile(r"^Step (\d+) bsz\(src/tgt/sents\) *([\d.]+) */ *([\d.]+) */ *([\d.]+) tgt_tok/s ([\d.]+) at")
PARAMETERS = re.compile(r"^opennmt_parameters (\d+)")
#: ``--peer-decode``: the harness saves a checkpoint this often (steps) and keeps the last one
SAVE_EVERY_STEPS = 100
CHECKPOINT = re.compile(r"^model_step_(\d+)\.pt$")
#: what ``onmt_translate -report_time`` logs: the mean over the sentences, in ms (one decimal)
AVERAGE_TIME = re.compile(r"Average translation time \(ms\): ([\d.]+)")


def opennmt_batches(stdout: str, corpus: PeerCorpus, run: Optional[Path] = None) -> dict[str, Any]:
    """Real target tokens and sentences per batch: the median over the harness's report lines after the first
    (the reports its figure is the median of), or the first when it is the only one; None when there are none."""
    reports = [match.groups() for match in map(REPORT.match, stdout.splitlines()) if match]
    counted = reports[1:] or reports
    parameters = [int(m.group(1)) for m in map(PARAMETERS.match, stdout.splitlines()) if m]
    return {
        "target_tokens_per_batch": median(float(r[2]) for r in counted) if counted else None,
        "sentences_per_batch": median(float(r[3]) for r in counted) if counted else None,
        "batch_source": f"its 'bsz' reports ({len(counted)} of {len(reports)}, the first dropped)" if reports
        else "not in its output (no report lines)",
        "reports": len(reports),
        "parameters": parameters[-1] if parameters else None,
    }


def opennmt_checkpoint(run: Path) -> Path:
    """The last ``model_step_N.pt`` the harness saved in ``run``."""
    steps = {int(m.group(1)): path for path in run.glob("model_step_*.pt") if (m := CHECKPOINT.match(path.name))}
    if not steps:
        raise PeerError(f"OpenNMT-py saved no checkpoint in {run}: it saves every {SAVE_EVERY_STEPS} steps, after its "
                        "data pipeline (about 85 s): give --peer-seconds 300 or more")
    return steps[max(steps)]


def opennmt_translate(model: Path, source: Path, output: Path, batch_size: int, beam: int, threads: int) -> float:
    """Translate ``source`` (pieces) into ``output`` with ``onmt_translate``; the seconds its own timer reports (its
    mean per sentence, 0.1 ms resolution, times the sentences)."""
    command = [str(peer_dir() / "opennmt-venv" / "bin" / "onmt_translate"), "-model", str(model), "-src", str(source),
               "-output", str(output), "-batch_size", str(batch_size), "-beam_size", str(beam), "-report_time"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")  # onmt's checkpoints hold an argparse Namespace
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    times = AVERAGE_TIME.findall(done.stdout + done.stderr)
    if done.returncode != 0 or not times:
        said = " | ".join((done.stderr.strip() or done.stdout.strip() or "(nothing)").splitlines()[-4:])
        raise PeerError(f"onmt_translate failed (exit {done.returncode}) on {model}: {said}")
    sentences = len(source.read_text(encoding="utf-8").splitlines())
    return float(times[-1]) * sentences / 1000


OPENNMT_DECODER = PeerDecoder(
    keep_model=lambda run: {"ONMT_RUN": str(run), "ONMT_SAVE_STEPS": str(SAVE_EVERY_STEPS)},
    checkpoint=opennmt_checkpoint,
    translate=opennmt_translate,
    spm_models=lambda model: shared_vocabularies(),
)


OPENNMT = PeerToolkit(
    name="opennmt",
    title="OpenNMT-py 3.5.1",
    default_seconds=300,
    batch_rule="4096 >= sentences x max(longest source, longest target + BOS + EOS); length-sorted",
    source_eos=False,
    read_batches=opennmt_batches,
    decoder=OPENNMT_DECODER,
    hint="OpenNMT-py spends about 85 s (more on a loaded machine) on its data pipeline before its first report, "
         "reports every 10 steps and its harness drops the first report: give --peer-seconds 240 or more "
         "(the harness's install log: $PEER_DIR/opennmt-install.log)",
)
