"""The error estimator against the realised error, window by window, under the
simulator's shifts: the table behind ``prices/estimated_error`` (docs/monitoring.md).

Every car is priced, and its error estimated, by a champion and an error estimator
trained as registration trains them but without that car (``answers.error_check``:
nested cross-validation, 5 outer folds of the protocol's model). For each shift, a stream
of price requests is cut into windows of the monitor's MAE window; each window's realised
MAE (|real price - price|) is set beside the mean of its estimates.

A window agrees when the two are within the tolerance: 3 standard errors of the realised
MAE (its own sampling noise over the window's cars) plus 10% of it (the estimator learns
the errors of models trained on 4/5 of the rows, a little worse than the model it
estimates for, so it runs a little high: +5% on unshifted traffic).

    .venv/bin/python benchmarks/error_estimates.py [--windows 9] [--size 500]
"""

from __future__ import annotations

import argparse
import os
import time
from functools import partial

import lightgbm
import numpy as np
from against import parse_or_compare

from answers.error_check import held_out, windows
from producers.simulator import Shift
from runtime.datasets import PRICING_CSV, dataset_path
from runtime.settings import MonitorSettings, Settings
from training.features import read_pricing
from training.train import LIGHTGBM_PARAMS

SHIFTS = (
    "none",
    "mix.winter_tires.false=x10",
    "mix.car_type.coupe=x10",
    "mix.fuel.petrol=x10",
    "mix.has_gps.true=x4",
    "engine_power=x1.5",
    "mileage=x2",
    "price=x1.3",
)
FIGURES = r"^(conditions|  \S)"


def tolerance(realised: float, standard_error: float) -> float:
    return 3 * standard_error + 0.1 * realised


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=9, help="windows per shift")
    parser.add_argument("--size", type=int, default=MonitorSettings().mae_window, help="price requests per window")
    parser.add_argument("--outer-folds", type=int, default=5)
    args = parse_or_compare(parser, FIGURES)
    if args is None:
        return
    pricing = read_pricing(dataset_path(PRICING_CSV, Settings().data_dir))
    started = time.perf_counter()
    print(f"training {args.outer_folds} outer folds × (5-fold CV + fit) of the champion's parameters...", flush=True)
    held = held_out(pricing, partial(lightgbm.LGBMRegressor, **{**LIGHTGBM_PARAMS, "n_jobs": 1}), args.outer_folds)
    trained = time.perf_counter() - started
    cv_mae = windows(held, [], len(pricing), 1)[0].realised_mae
    threshold = cv_mae * (1 + MonitorSettings().mae_margin)
    print(
        f"\nconditions: {os.cpu_count()} CPUs; {len(pricing):,} listings; {args.outer_folds} outer folds trained in "
        f"{trained:.0f} s; {args.windows} windows of {args.size} price requests per shift; held-out MAE of the "
        f"whole table {cv_mae:.2f} €, the monitor's alert above {threshold:.2f} €"
    )
    print(
        "\n  "
        + "shift".ljust(30)
        + "realised MAE €".rjust(16)
        + "estimated €".rjust(13)
        + "gap €".rjust(8)
        + "worst gap".rjust(11)
        + "agree".rjust(8)
        + "alert (real/est.)".rjust(19)
    )
    for text in SHIFTS:
        shifts = [] if text == "none" else [Shift.parse(text)]
        cut = windows(held, shifts, args.size, args.windows)
        realised = np.mean([w.realised_mae for w in cut])
        estimated = np.mean([w.estimated_mae for w in cut])
        gaps = [w.estimated_mae - w.realised_mae for w in cut]
        agree = sum(abs(g) <= tolerance(w.realised_mae, w.standard_error) for g, w in zip(gaps, cut, strict=True))
        alerts = f"{'yes' if realised > threshold else 'no'}/{'yes' if estimated > threshold else 'no'}"
        print(
            "  "
            + text.ljust(30)
            + f"{realised:16.2f}{estimated:13.2f}{estimated - realised:+8.2f}{max(gaps, key=abs):+11.2f}"
            + f"{agree:>5}/{len(cut)}"
            + alerts.rjust(19)
        )


if __name__ == "__main__":
    main()
