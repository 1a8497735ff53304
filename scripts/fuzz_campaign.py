"""A measured fuzz campaign: the property-based fuzz tests of the Python API, the command lines and the HTTP
service, run at N examples per surface (CI runs the same properties at a small fixed budget), with counts.

    PYTHONPATH=$PWD python scripts/fuzz_campaign.py --examples 10000 --json campaign.json

Runs tests/test_fuzz.py, test_fuzz_calls.py, test_fuzz_argv.py and test_fuzz_http.py in this process under
pytest with ``SEQ2SEQ_FUZZ_EXAMPLES=N`` (fresh random examples; each surface's properties share its N by the
shares in their ``budget(...)``), only the properties (and the HTTP server's check after them), and counts every
example Hypothesis runs through its observability callback: per property and per surface, the examples run
(generated, then any shrinking of a failure), those Hypothesis rejected as invalid, the failing ones, the distinct
failures (by exception and place), what the tests report with ``hypothesis.event`` (exit statuses, reply
statuses), and the wall and CPU time. Exit status 0 when every property held.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FILES = ["tests/test_fuzz.py", "tests/test_fuzz_calls.py", "tests/test_fuzz_argv.py", "tests/test_fuzz_http.py"]
SURFACES = {"test_api_": "api", "test_cli_": "cli", "test_http_": "http"}


def surface_of(name: str) -> str:
    return next((surface for prefix, surface in SURFACES.items() if name.startswith(prefix)), "other")


class Counts:
    """Hypothesis test cases per property: how each ended and, for failures, why."""

    def __init__(self) -> None:
        self.status: dict[str, Counter] = defaultdict(Counter)
        self.failures: dict[str, Counter] = defaultdict(Counter)
        self.events: dict[str, Counter] = defaultdict(Counter)  # what the tests report with hypothesis.event

    def __call__(self, observation) -> None:
        if getattr(observation, "type", None) != "test_case":
            return
        name = observation.property.split("::")[-1].split(".")[-1]
        phase = "shrink" if "shrink" in observation.how_generated else "generate"
        self.status[name][f"{phase}_{observation.status}"] += 1
        if observation.status == "failed":
            self.failures[name][observation.status_reason] += 1
        if phase == "generate" and observation.status != "gave_up":
            for key, value in (observation.features or {}).items():
                if not key.startswith(("invalid because", "Retried draw", "Draw for")):
                    self.events[name][f"{key} {value}".strip()] += 1


class Timing:
    """pytest plugin: only the properties (and the checks after them) run; each test's outcome and times."""

    def __init__(self) -> None:
        self.outcome: dict[str, str] = {}
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.messages: dict[str, str] = {}

    def pytest_collection_modifyitems(self, items) -> None:
        keep = [item for item in items if getattr(getattr(item, "obj", None), "is_hypothesis_test", False)
                or item.name.endswith("after_the_fuzzing")]
        items[:] = keep

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        yield
        self.wall[item.name] += time.perf_counter() - start_wall
        self.cpu[item.name] += time.process_time() - start_cpu

    def pytest_runtest_logreport(self, report) -> None:
        name = report.nodeid.split("::")[-1]
        if report.failed or report.when == "call":
            self.outcome[name] = "failed" if report.failed else self.outcome.get(name, report.outcome)
        if report.failed:
            self.messages[name] = str(report.longrepr)[-3000:]


def summary(counts: Counts, timing: Timing, examples: int) -> dict:
    tests = {}
    for name in sorted(set(timing.outcome) | set(counts.status)):
        status = counts.status.get(name, Counter())
        tests[name] = {
            "surface": surface_of(name), "outcome": timing.outcome.get(name, "not run"),
            "examples": status["generate_passed"] + status["generate_failed"],
            "invalid": status["generate_gave_up"], "failing": status["generate_failed"] + status["shrink_failed"],
            "shrink_examples": status["shrink_passed"] + status["shrink_failed"] + status["shrink_gave_up"],
            "distinct_failures": sorted(counts.failures.get(name, {})),
            "events": dict(sorted(counts.events.get(name, {}).items())),
            "wall_s": round(timing.wall.get(name, 0.0), 1), "cpu_s": round(timing.cpu.get(name, 0.0), 1),
        }
    surfaces = {}
    for surface in sorted({t["surface"] for t in tests.values()}):
        members = [t for t in tests.values() if t["surface"] == surface]
        surfaces[surface] = {key: sum(t[key] for t in members) for key in
                             ("examples", "invalid", "failing", "shrink_examples")} | {
            "distinct_failures": sum(len(t["distinct_failures"]) for t in members),
            "wall_s": round(sum(t["wall_s"] for t in members), 1), "cpu_s": round(sum(t["cpu_s"] for t in members), 1),
            "tests_failed": sum(t["outcome"] != "passed" for t in members)}
    return {"examples_per_surface": examples, "tests": tests, "surfaces": surfaces}


def print_table(result: dict) -> None:
    print(f"\n{'test':<78} {'examples':>8} {'invalid':>7} {'failing':>7} {'distinct':>8} {'wall s':>7} {'cpu s':>7}")
    for name, t in result["tests"].items():
        print(f"{name[:78]:<78} {t['examples']:>8} {t['invalid']:>7} {t['failing']:>7} "
              f"{len(t['distinct_failures']):>8} {t['wall_s']:>7} {t['cpu_s']:>7}  {t['outcome']}")
    print(f"\n{'surface':<8} {'examples':>8} {'invalid':>7} {'failing':>7} {'distinct':>8} {'wall s':>7} {'cpu s':>7}")
    for surface, s in result["surfaces"].items():
        print(f"{surface:<8} {s['examples']:>8} {s['invalid']:>7} {s['failing']:>7} {s['distinct_failures']:>8} "
              f"{s['wall_s']:>7} {s['cpu_s']:>7}")
    for name, t in result["tests"].items():
        if t["events"]:
            print(f"{name}: " + ", ".join(f"{key}: {count}" for key, count in t["events"].items()))
    for name, t in result["tests"].items():
        for reason in t["distinct_failures"]:
            print(f"failure in {name}: {reason}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=10_000, help="examples per surface (default 10,000)")
    parser.add_argument("--json", type=Path, help="write the counts here")
    parser.add_argument("-k", dest="select", help="pytest -k expression (e.g. 'http' for one surface)")
    args = parser.parse_args(argv)
    if args.examples < 1:
        parser.error(f"--examples must be >= 1, got {args.examples}")
    os.environ["SEQ2SEQ_FUZZ_EXAMPLES"] = str(args.examples)  # before the tests import support.fuzzing
    os.chdir(REPO_ROOT)
    from hypothesis.internal import observability

    observability.OBSERVABILITY_COLLECT_COVERAGE = False  # counts only: no line coverage per example (slow)
    counts, timing = Counts(), Timing()
    observability.add_observability_callback(counts, all_threads=False)
    start = time.perf_counter()
    pytest_args = [*FILES, "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--tb=short"]
    if args.select:
        pytest_args += ["-k", args.select]
    status = pytest.main(pytest_args, plugins=[timing])
    result = summary(counts, timing, args.examples)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result.update(total_wall_s=round(time.perf_counter() - start, 1),
                  total_cpu_s=round(time.process_time(), 1),
                  children_cpu_s=round(children.ru_utime + children.ru_stime, 1),  # the server, subprocess runs
                  pytest_status=int(status))
    print_table(result)
    print(f"\ntotal: {result['total_wall_s']} s wall, {result['total_cpu_s']} s CPU here, "
          f"{result['children_cpu_s']} s CPU in child processes; pytest exit status {result['pytest_status']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
