"""How strong the unit tests are: the mutation score of the domain code, by mutmut.

    python benchmarks/mutation_score.py            # mutate, test, report (a few minutes)
    python benchmarks/mutation_score.py --report   # report the last run again

mutmut changes the domain modules one small edit at a time (``[tool.mutmut]``
``only_mutate`` in pyproject.toml: the delay arithmetic, the minimum-gap figures, the
scoring and dead-letter decisions, the contracts' validation, the interval calibration)
and runs the unit tests against each mutant; a mutant is killed when a test fails.

Score = killed / (mutants counted - survivors judged equivalent). Not counted: the
database, Kafka and retry plumbing that two of those modules also hold (``PLUMBING``),
which the integration tests cover. A survivor judged equivalent behaves as the original
for every input, or differs only in a log line; each one is listed in ``EQUIVALENT``
with the reason. Not part of CI: a report to read, as the benchmarks are.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MUTMUT = [sys.executable, "-m", "mutmut"]

# Functions of the mutated modules that are not domain logic (integration-tested).
PLUMBING = {
    "scorer.reply_topics.xǁReplyTopicsǁ__init__",
    "scorer.reply_topics.xǁReplyTopicsǁ_list_topics",
}

STRICT_ZIP = "zip(..., strict=True) after the lengths are known equal: strict=None/False/absent zip the same pairs"
FLOAT_DTYPE = (
    "np.asarray(..., dtype=float) dropped: the ratio divides by a float maximum, so ints or floats give the same"
)
LOG_LINE = "the arguments of a log line: what is logged, not what is decided"
EQUIVALENT = {
    **dict.fromkeys(
        [
            "scorer.scoring.x_score_batch__mutmut_18",
            "scorer.scoring.x_score_batch__mutmut_21",
            "scorer.scoring.x_score_batch__mutmut_22",
            "scorer.scoring.x_price_events__mutmut_15",
            "scorer.scoring.x_price_events__mutmut_18",
            "scorer.scoring.x_price_events__mutmut_19",
            "schemas.predict.x__row_to_fields__mutmut_8",
            "schemas.predict.x__row_to_fields__mutmut_11",
            "schemas.predict.x__row_to_fields__mutmut_12",
        ],
        STRICT_ZIP,
    ),
    **dict.fromkeys(
        [
            "training.intervals.x_ratio_quantiles__mutmut_4",
            "training.intervals.x_ratio_quantiles__mutmut_6",
            "training.intervals.x_ratio_quantiles__mutmut_12",
            "training.intervals.x_ratio_quantiles__mutmut_14",
            "training.intervals.x_calibrate__mutmut_3",
            "training.intervals.x_calibrate__mutmut_5",
            "training.intervals.x_calibrate__mutmut_8",
            "training.intervals.x_calibrate__mutmut_10",
        ],
        FLOAT_DTYPE,
    ),
    **dict.fromkeys(
        [
            "scorer.scoring.x_price_each__mutmut_4",
            "scorer.scoring.x_price_each__mutmut_5",
            "scorer.scoring.x_price_each__mutmut_9",
        ],
        LOG_LINE,
    ),
    **dict.fromkeys(
        [f"runtime.kafka.dead_letters.x_validation_reason__mutmut_{n}" for n in (5, 6, 7, 8)],
        "pydantic's errors() options add the url or input to each error; the reason reads only loc and msg",
    ),
    "runtime.kafka.dead_letters.x_dead_letter__mutmut_28": "codec names are case-insensitive: 'UTF-8' is 'utf-8'",
    "answers.min_gap.x_curve__mutmut_22": "np.array of Python ints: int64 without the dtype too (on a 64-bit machine)",
    "answers.min_gap.x_curve__mutmut_24": "the same, dtype left out",
    "answers.min_gap.x_curve__mutmut_31": "side='left' is np.searchsorted's default",
}


def run_mutmut() -> None:
    env = {
        **os.environ,
        "RENTALSTREAM_DATA_DIR": os.environ.get("RENTALSTREAM_DATA_DIR", str(REPO.parent / "shared" / "data")),
    }
    print(f"mutmut run (the unit tests against each mutant; data: {env['RENTALSTREAM_DATA_DIR']})", flush=True)
    shutil.rmtree(REPO / "mutants", ignore_errors=True)  # mutmut reuses old verdicts when only the tests changed
    subprocess.run([*MUTMUT, "run"], cwd=REPO, env=env, check=True)


def results() -> dict[str, str]:
    """{mutant: status} of the last run."""
    listing = subprocess.run(
        [*MUTMUT, "results", "--all", "true"], cwd=REPO, capture_output=True, text=True, check=True
    )
    found = {}
    for line in listing.stdout.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            found[name] = status
    return found


def function_of(mutant: str) -> str:
    return mutant.rpartition("__mutmut_")[0]


def diff(mutant: str) -> str:
    shown = subprocess.run([*MUTMUT, "show", mutant], cwd=REPO, capture_output=True, text=True, check=False).stdout
    return " / ".join(
        line[1:].strip() for line in shown.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")
    )


def report(statuses: dict[str, str]) -> None:
    counted = {m: s for m, s in statuses.items() if function_of(m) not in PLUMBING}
    equivalent = {m for m, s in counted.items() if m in EQUIVALENT and s == "survived"}
    stale = sorted(m for m in EQUIVALENT if counted.get(m) != "survived")
    by_module: dict[str, Counter] = defaultdict(Counter)
    for mutant, status in counted.items():
        module = function_of(mutant).rpartition(".x")[0]
        by_module[module]["equivalent" if mutant in equivalent else status] += 1
    print(f"\n{'module':28} {'mutants':>8} {'killed':>7} {'survived':>9} {'no tests':>9} {'equivalent':>11}")
    for module, counts in sorted(by_module.items()):
        print(
            f"{module:28} {sum(counts.values()):8} {counts['killed']:7} {counts['survived']:9} "
            f"{counts['no tests']:9} {counts['equivalent']:11}"
        )
    killed = sum(1 for s in counted.values() if s == "killed")
    scored = len(counted) - len(equivalent)
    print(
        f"\nmutation score: {killed} killed of {scored} ({killed / scored:.1%}); {len(counted)} mutants counted, "
        f"{len(equivalent)} judged equivalent, {len(statuses) - len(counted)} in plumbing not counted"
    )
    others = sorted(m for m, s in counted.items() if s != "killed" and m not in equivalent)
    if others:
        print(f"\nnot killed and not judged equivalent ({len(others)}):")
        for mutant in others:
            print(f"  {mutant} [{counted[mutant]}]: {diff(mutant)}")
    print("\njudged equivalent:")
    for mutant in sorted(equivalent):
        print(f"  {mutant}: {EQUIVALENT[mutant]}")
    if stale:
        print(f"\nlisted as equivalent but no longer surviving (renumbered? recheck EQUIVALENT): {', '.join(stale)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", action="store_true", help="Report the last run without running mutmut again.")
    args = parser.parse_args()
    if not args.report:
        run_mutmut()
    report(results())


if __name__ == "__main__":
    main()
