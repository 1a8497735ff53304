"""``--peers opennmt``: OpenNMT-py 3.5.1 trained on this machine in the same run by
``../shared/peers/opennmt/speed.sh``, whose stdout ends with its median target tokens/s::

    Step 10 bsz(src/tgt/sents) 3281/3784/285 tgt_tok/s 293 at 129 s      (one line per report, every 10 steps)
    opennmt_parameters 12074560 (JoeyNMT 2.3.0 on this workload: 12262912); reports: 5
    opennmt_target_tokens_per_s 1192

Its report lines carry OpenNMT-py's own batch averages (``bsz``: source tokens / real target tokens incl. EOS /
sentences per batch over the last 10 steps): the real target tokens per batch come from there.
"""

from __future__ import annotations

import re
from statistics import median
from typing import Any

from seq2seq.bench.peers import PeerCorpus, PeerToolkit

REPORT = re.compile(r"^Step (\d+) bsz\(src/tgt/sents\) *([\d.]+) */ *([\d.]+) */ *([\d.]+) tgt_tok/s ([\d.]+) at")
PARAMETERS = re.compile(r"^opennmt_parameters (\d+)")


def opennmt_batches(stdout: str, corpus: PeerCorpus) -> dict[str, Any]:
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


OPENNMT = PeerToolkit(
    name="opennmt",
    title="OpenNMT-py 3.5.1",
    default_seconds=300,
    batch_rule="4096 >= sentences x max(longest source, longest target + BOS + EOS); length-sorted",
    source_eos=False,
    read_batches=opennmt_batches,
    hint="OpenNMT-py spends about 85 s (more on a loaded machine) on its data pipeline before its first report, "
         "reports every 10 steps and its harness drops the first report: give --peer-seconds 240 or more "
         "(the harness's install log: $PEER_DIR/opennmt-install.log)",
)
