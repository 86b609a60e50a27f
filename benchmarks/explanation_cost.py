"""What explaining a price costs, against pricing it: the figures behind explaining on
demand rather than for every stored price (docs/decisions.md, issue 22).

    python benchmarks/explanation_cost.py [--cars N] [--rounds N]

Fits the champion's recipe (``training.train.LIGHTGBM_PARAMS``) on the pricing file,
compiles its trees as a scorer does, and times, on one thread and per car, over the
file's first N cars: pricing through the compiled trees, through LightGBM, and the exact
contributions (``pred_contrib``, TreeSHAP) that ``/predict?explain=true`` returns. From
these it prints the scorer's pricing throughput (cars per second of a core) with
explanations off and on. It also times a serving process's first explanation: importing
LightGBM with its optional integrations (pandas, scikit-learn) and without them
(``scorer.pricing.lean_lightgbm``), each in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightgbm

from runtime.compiled_trees import compile_trees
from runtime.datasets import PRICING_CSV, dataset_path
from runtime.settings import Settings
from schemas.cars import CarFeatures
from schemas.features import FEATURES, feature_codes
from training.features import TARGET, build_features, read_pricing
from training.train import LIGHTGBM_PARAMS

# RSS, not ru_maxrss: a child started by this (large) process inherits its peak.
IMPORT_PROBE = """
import sys, time
import numpy, psutil
{setup}
before = psutil.Process().memory_info().rss
started = time.perf_counter()
{how}
took = time.perf_counter() - started
grown = (psutil.Process().memory_info().rss - before) / 2**20
print(f"{{took:.2f}} {{grown:.0f}}")
"""
IMPORTS = {  # what: (already imported, timed)
    "import lightgbm (its integrations too)": ("import scorer.pricing", "import lightgbm"),
    "scorer.pricing.lean_lightgbm()": ("import scorer.pricing", "scorer.pricing.lean_lightgbm()"),
}


def per_car(work, cars: int, rounds: int) -> float:
    """The median over ``rounds`` of the seconds per car ``work()`` takes."""
    work()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) / cars)
    return statistics.median(times)


def first_import(setup: str, how: str, rounds: int) -> tuple[float, float]:
    """(seconds, MiB of RSS grown) of ``how`` in a fresh interpreter that has run ``setup``
    (the scorer's pricing module, as a serving process has it), medians over rounds."""
    probe = IMPORT_PROBE.format(setup=setup, how=how)
    runs = []
    for _ in range(rounds):
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=Path.cwd())
        runs.append(tuple(map(float, out.stdout.split())))
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cars", type=int, default=500, help="cars timed per round (default 500)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    table = read_pricing(dataset_path(PRICING_CSV, Settings().data_dir))
    model = lightgbm.LGBMRegressor(**LIGHTGBM_PARAMS).fit(build_features(table), table[TARGET])
    booster = model.booster_
    cars = [CarFeatures(**row) for row in table[list(FEATURES)].head(args.cars).to_dict(orient="records")]
    matrix = feature_codes(cars)
    with tempfile.TemporaryDirectory() as folder:
        compiled = asyncio.run(compile_trees(booster, Path(folder)))
        timed = {  # under 500 rows the compiled trees price on one thread (PARALLEL_FROM_ROWS)
            "price, compiled trees (the scorer)": per_car(
                lambda: compiled.predict(matrix[: min(len(cars), 499)]), min(len(cars), 499), args.rounds
            ),
            "price, LightGBM": per_car(lambda: booster.predict(matrix, num_threads=1), len(cars), args.rounds),
            "explain, LightGBM pred_contrib": per_car(
                lambda: booster.predict(matrix, pred_contrib=True, num_threads=1), len(cars), args.rounds
            ),
        }

    print(
        f"explanation cost, {time.strftime('%Y-%m-%d')}, {platform.node()} ({os.cpu_count()} cores), "
        f"champion recipe: {booster.num_trees()} trees, {LIGHTGBM_PARAMS['num_leaves']} leaves; "
        f"{len(cars)} cars of the pricing file, one thread, medians of {args.rounds} rounds"
    )
    for what, seconds in timed.items():
        print(f"  {what:40s} {seconds * 1e6:10.1f} µs per car")
    compiled_s, explain_s = timed["price, compiled trees (the scorer)"], timed["explain, LightGBM pred_contrib"]
    print(
        f"  pricing alone: {1 / compiled_s:,.0f} cars per core-second; with every price explained: "
        f"{1 / (compiled_s + explain_s):,.0f} ({explain_s / compiled_s:,.0f}x the pricing's cost)"
    )
    print("a serving process's first explanation: importing LightGBM (fresh interpreter, numpy loaded)")
    for what, (setup, how) in IMPORTS.items():
        seconds, grown = first_import(setup, how, args.rounds)
        print(f"  {what:40s} {seconds:6.2f} s   +{grown:.0f} MiB RSS")


if __name__ == "__main__":
    main()
