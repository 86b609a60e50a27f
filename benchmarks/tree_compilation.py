"""What compiling the champion's trees costs, and what the compiled trees save, with and
without lleaves inlining each tree into the forest (``runtime.compiled_trees.INLINE_TREES``,
docs/decisions.md).

    python benchmarks/tree_compilation.py [--cars N] [--rounds N]

Fits the champion's recipe (``training.train.LIGHTGBM_PARAMS``) on the pricing file and,
for each setting, compiles its trees as a scorer or training does (in a child process,
``runtime.compiled_trees.compile_object``), timing the compile's wall clock, then loads
the object as a scorer does (``load_object``) and times pricing the file's first N cars
on one thread, as the scorer does below 500 rows. It checks each object against LightGBM.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightgbm
import numpy as np

from runtime.compiled_trees import INLINE_TREES, load_object
from runtime.datasets import PRICING_CSV, dataset_path
from runtime.settings import Settings
from schemas.cars import CarFeatures
from schemas.features import FEATURES, feature_codes
from training.features import TARGET, build_features, read_pricing
from training.train import LIGHTGBM_PARAMS

ONE_THREAD_ROWS = 499  # under 500 rows the compiled trees price on one thread (PARALLEL_FROM_ROWS)


def compile_seconds(text_path: Path, object_path: Path, inline: bool) -> float:
    """Wall-clock seconds of compiling in a fresh interpreter, as the product does."""
    program = (
        "import sys; from runtime.compiled_trees import compile_object; "
        "compile_object(sys.argv[1], sys.argv[2], inline=sys.argv[3] == 'True')"
    )
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", program, str(text_path), str(object_path), str(inline)], check=True, cwd=Path.cwd()
    )
    return time.perf_counter() - started


def per_car(work, cars: int, rounds: int) -> float:
    """The median over ``rounds`` of the seconds per car ``work()`` takes."""
    work()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(20):
            work()
        times.append((time.perf_counter() - started) / (20 * cars))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cars", type=int, default=ONE_THREAD_ROWS, help="cars priced per call (default 499)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of 20 calls timed (default 5)")
    args = parser.parse_args()

    table = read_pricing(dataset_path(PRICING_CSV, Settings().data_dir))
    booster = lightgbm.LGBMRegressor(**LIGHTGBM_PARAMS).fit(build_features(table), table[TARGET]).booster_
    cars = [CarFeatures(**row) for row in table[list(FEATURES)].head(args.cars).to_dict(orient="records")]
    matrix = feature_codes(cars)
    expected = booster.predict(matrix, num_threads=1)
    print(
        f"tree compilation, {time.strftime('%Y-%m-%d')}, {platform.node()} ({os.cpu_count()} cores), "
        f"champion recipe: {booster.num_trees()} trees of up to {LIGHTGBM_PARAMS['num_leaves']} leaves; "
        f"pricing {len(cars)} cars of the pricing file per call, one thread, medians of {args.rounds} rounds; "
        f"the product compiles with inline={INLINE_TREES}"
    )
    lightgbm_s = per_car(lambda: booster.predict(matrix, num_threads=1), len(cars), args.rounds)
    print(f"  {'LightGBM (no compilation)':28s} {'':>16s} {lightgbm_s * 1e6:8.1f} µs per car")
    with tempfile.TemporaryDirectory() as folder:
        text_path = Path(folder) / "model.txt"
        text_path.write_text(booster.model_to_string())
        for inline in (True, False):
            object_path = Path(folder) / f"inline-{inline}.o"
            seconds = compile_seconds(text_path, object_path, inline)
            compiled = load_object(object_path)
            difference = float(np.max(np.abs(compiled.predict(matrix) - expected)))
            priced = per_car(lambda compiled=compiled: compiled.predict(matrix), len(cars), args.rounds)
            print(
                f"  {f'compiled, inline={inline}':28s} {seconds:7.1f} s compile {priced * 1e6:8.1f} µs per car"
                f"   (largest difference from LightGBM {difference:.1e} €)"
            )


if __name__ == "__main__":
    main()
