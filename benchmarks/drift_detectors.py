"""Drift detectors compared on this product's streams: false alarms, detection delay, cost.

    python benchmarks/drift_detectors.py [--shift-from N] [--detectors adwin:0.002,page_hinkley:50,...]
        [--cooldowns 0,1000] [--clean-events N]

Builds, in process and without a broker, exactly what the monitor would read: the
simulator's stream (one pass of the delay history as rentals plus 20% price requests
from the listings, 26,637 events), each rental and request priced by a LightGBM model
fitted like the champion, and the delay facts as the scorer joins them. Then, for every
detector setting, runs the monitor's ``DriftWatch`` (all 66 signals) over

- the clean stream (three passes of the history by default): alerts per signal are false
  alarms (nothing was shifted), also given per 100,000 events;
- each documented shift from event ``--shift-from`` on: the detection delay, in values
  of the shifted signal between the first shifted one and the alert, and every alert the
  shifted signal raised from the shift to the end (one lasting shift should raise one);

each with every alert cooldown of ``--cooldowns``, and prints the cost per detector update. Finally the monitor's own throughput with the
chosen setting: JSON bytes in, validated, fed to every signal (events/s, one core).
KSWIN runs on the clean stream and on two shifts only: at ~1 ms per update its full
comparison would take most of an hour, which is the point of the measurement.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter, defaultdict
from itertools import islice
from pathlib import Path

import numpy as np
from against import parse_or_compare

from monitor.detectors import DetectorSpec
from monitor.watch import DriftWatch, Origin
from producers.car_profiles import read_profile_pool
from producers.replay import rental_events
from producers.simulator import Shift, Simulator
from runtime.datasets import DELAYS_XLSX, PRICING_CSV, dataset_path, read_delay_history
from runtime.settings import MonitorSettings, Settings
from schemas.events import DelayScored, PriceRequest, PriceScored, RentalEvent, utc_now
from schemas.features import feature_codes
from scorer.delays import is_late, knock_on
from training.features import TARGET, build_features, read_pricing
from training.reference import reference_stats
from training.train import cross_validate, new_lightgbm

SHIFTS = {  # shift → the signal it should set off
    "mileage=x2": "rentals/mileage",
    "engine_power=x1.5": "rentals/engine_power",
    "delay.connect=+120": "rentals/delay.connect",
    "delay.mobile=+60": "rentals/delay.mobile",
    "price=x1.3": "prices/absolute_error",
}
DEFAULT_DETECTORS = "adwin:0.002,adwin:0.0001,page_hinkley:50,page_hinkley:200,kswin:0.005,kswin:0.00001"
EVENTS = 26_637  # one pass of the 21,310 rentals with 20% price requests


FIGURES = r"^(conditions|false alarms|detection delay|  \S)"  # the lines --against sets side by side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shift-from", type=int, default=10_000)
    parser.add_argument("--detectors", default=DEFAULT_DETECTORS)
    parser.add_argument("--chosen", default="adwin:0.0001", help="the setting whose throughput is measured")
    parser.add_argument(
        "--cooldowns",
        default=f"0,{MonitorSettings().alert_cooldown}",
        help="alert cooldowns (values of a signal) each detector runs with; by default none and the setting's default",
    )
    parser.add_argument(
        "--clean-events",
        type=int,
        default=3 * EVENTS,
        help="length of the clean stream the false alarms are counted on",
    )
    args = parse_or_compare(parser, FIGURES)
    if args is None:
        return
    settings = Settings()
    pricing_csv = dataset_path(PRICING_CSV, settings.data_dir)
    xlsx = dataset_path(DELAYS_XLSX, settings.data_dir)

    print("fitting the model and its reference (5-fold CV, as training does)...", flush=True)
    pricing = read_pricing(pricing_csv)
    matrix = build_features(pricing)
    model = new_lightgbm().fit(matrix, pricing[TARGET])
    cv = cross_validate("lightgbm", new_lightgbm, matrix, pricing[TARGET]).mean()
    reference = reference_stats(
        pricing,
        TARGET,
        model.predict(matrix),
        delay_history=read_delay_history(xlsx),
        cv_mae=cv["cv_mae_mean"],
        cv_rmse=cv["cv_rmse_mean"],
    )
    history, listings = rental_events(xlsx, pricing_csv), read_profile_pool(pricing_csv)

    def stream(shift: str | None, events: int = EVENTS) -> list[tuple[int, str, object]]:
        shifts = [Shift.parse(shift)] if shift else []
        simulator = Simulator(history, listings, shifts=shifts, shift_from=args.shift_from, run_id="bench")
        return monitored_stream(list(islice(simulator.events(), events)), model.booster_)

    clean = stream(None, args.clean_events)
    shifted = {shift: stream(shift) for shift in SHIFTS}
    cooldowns = [int(c) for c in args.cooldowns.split(",")]
    print(
        f"\nconditions: {os.cpu_count()} CPUs; the clean stream {args.clean_events:,} simulated events "
        f"({len(clean):,} monitored messages: rentals, prices, delay facts), each shifted one {EVENTS:,}, "
        f"shifted from event {args.shift_from:,}; cooldowns {', '.join(map(str, cooldowns))} values of a signal"
    )

    rows = []
    for text in args.detectors.split(","):
        name, setting = text.split(":")
        spec = DetectorSpec(name, float(setting))
        only = ("rentals/mileage", "rentals/engine_power") if name == "kswin" else None
        for cooldown in cooldowns:
            false_alarms, updates, seconds = run(reference, spec, clean, None, only, cooldown=cooldown)
            delays = {}
            for shift, signal in SHIFTS.items():
                if name == "kswin" and signal not in only:
                    continue
                delays[shift] = run(reference, spec, shifted[shift], args.shift_from, only, signal, cooldown)
            rows.append((f"{spec.label}, cooldown {cooldown}", false_alarms, delays, seconds / updates * 1e6))

    per = 100_000 / args.clean_events
    print("\nfalse alarms on the clean stream (alerts, and per 100,000 events; every signal not listed had none)")
    for label, false_alarms, _, cost in rows:
        listed = ", ".join(f"{s} {n}" for s, n in sorted(false_alarms.items())) or "none"
        total = sum(false_alarms.values())
        print(f"  {label:42} {total:3d} ({total * per:5.1f})  {listed}   [{cost:.2f} µs/update]")
    print(
        "\ndetection delay (values of the shifted signal from the first shifted one to the alert;"
        " price=x1.3 is seen by the rolling MAE, whatever the detector), and in brackets every alert"
        " of that signal from the shift to the end of the stream (d drifting, r recovered): one shift, one d"
    )
    print("  " + "detector".ljust(42) + "".join(s.ljust(22) for s in SHIFTS))
    for label, _, delays, _ in rows:
        cells = [outcome(delays.get(s)) for s in SHIFTS]
        print("  " + label.ljust(42) + "".join(cell.ljust(22) for cell in cells))

    name, setting = args.chosen.split(":")
    rate = throughput(reference, DetectorSpec(name, float(setting)), clean)
    print(
        f"\nmonitor throughput with {DetectorSpec(name, float(setting)).label}: {rate:,.0f} messages/s "
        "(JSON validated and fed to all 66 signals, one core, no broker)"
    )


def outcome(result: tuple | None) -> str:
    if result is None:
        return "-"
    delay, alerts = result
    return f"{delay} [{''.join(state[0] for state in alerts)}]"


def monitored_stream(events: list, booster) -> list[tuple[int, str, object]]:
    """(index of the simulated event, topic, message) as the monitor receives them: each
    rental, its price when it ended, its delay facts; each price request's price."""
    cars = [e.car for _, _, e in events if isinstance(e, PriceRequest) or e.state == "ended"]
    prices = iter(np.round(booster.predict(feature_codes(cars)), 2))
    now, delays, waiting = utc_now(), {}, defaultdict(list)
    out = []
    for index, (_, _, event) in enumerate(events):
        if isinstance(event, PriceRequest):
            out.append(
                (
                    index,
                    "prices",
                    PriceScored(
                        price_id=event.request_id,
                        request_id=event.request_id,
                        price_per_day=float(next(prices)),
                        listed_price_per_day=event.listed_price_per_day,
                        model_name="m",
                        model_version="1",
                        event_time=now,
                        scored_at=now,
                    ),
                )
            )
            continue
        out.append((index, "rentals", event))
        if event.state == "ended":
            out.append(
                (
                    index,
                    "prices",
                    PriceScored(
                        price_id=f"rental-{event.rental_id}",
                        rental_id=event.rental_id,
                        price_per_day=float(next(prices)),
                        model_name="m",
                        model_version="1",
                        event_time=now,
                        scored_at=now,
                    ),
                )
            )
        delays[event.rental_id] = event.delay_at_checkout_minutes
        facts = [(event, delays.get(event.previous_ended_rental_id))]
        facts += [(follower, event.delay_at_checkout_minutes) for follower in waiting.pop(event.rental_id, [])]
        if event.previous_ended_rental_id and event.previous_ended_rental_id not in delays:
            waiting[event.previous_ended_rental_id].append(event)
        for rental, previous_delay in facts:
            minutes, conflict = knock_on(previous_delay, rental.planned_gap_minutes)
            out.append((index, "delays", delay_fact(rental, previous_delay, minutes, conflict, now)))
    return out


def delay_fact(event: RentalEvent, previous_delay, waiting, conflict, now) -> DelayScored:
    return DelayScored(
        rental_id=event.rental_id,
        car_id=event.car_id,
        checkin_type=event.checkin_type,
        state=event.state,
        delay_at_checkout_minutes=event.delay_at_checkout_minutes,
        is_late=is_late(event.delay_at_checkout_minutes),
        previous_ended_rental_id=event.previous_ended_rental_id,
        planned_gap_minutes=event.planned_gap_minutes,
        previous_delay_minutes=previous_delay,
        waiting_minutes=waiting,
        is_conflict=conflict,
        event_time=now,
        scored_at=now,
    )


def run(reference, spec, messages, shift_from, only=None, target=None, cooldown=0):
    """Alerts per signal (``target`` None), or the target's detection delay and how many
    alerts it raised from the shift to the end of the stream; with the cost."""
    watch = DriftWatch(reference, spec, cooldown=cooldown)
    monitors = {m.signal: m for m in watch.monitors()}
    if only:  # only these signals get a real detector (KSWIN is too slow for all of them)
        for signal, monitor in monitors.items():
            if signal not in only and hasattr(monitor, "spec"):
                monitor.observe = lambda value: None
    origin = Origin("bench", 0, 0, "-", utc_now())
    observe = {"rentals": watch.observe_rental, "prices": watch.observe_price, "delays": watch.observe_delay}
    alerts: Counter = Counter()
    seen_at_shift = None
    delay, after_shift = None, []
    started = time.perf_counter()
    for index, topic, message in messages:
        if shift_from is not None and seen_at_shift is None and index >= shift_from:
            seen_at_shift = {s: m.events_seen for s, m in monitors.items()}
            if target is not None and monitors[target].state == "drifting":
                return "already drifting", []  # a false alarm before the shift: no new alert can come
        for fired in observe[topic](message, origin):
            transition = fired.transition
            if target is None:
                alerts[transition.signal] += 1
            elif transition.signal == target and seen_at_shift is not None:
                after_shift.append(transition.state)
                if delay is None and transition.state == "drifting":
                    delay = transition.events_seen - seen_at_shift[target]
    seconds = time.perf_counter() - started
    if target is not None:
        return ("missed" if delay is None else delay), after_shift
    updates = sum(m.events_seen for s, m in monitors.items() if not only or s in only)
    return alerts, updates, seconds


def throughput(reference, spec, messages) -> float:
    contracts = {"rentals": RentalEvent, "prices": PriceScored, "delays": DelayScored}
    encoded = [(topic, message.model_dump_json().encode()) for _, topic, message in messages]
    watch = DriftWatch(reference, spec)
    observe = {"rentals": watch.observe_rental, "prices": watch.observe_price, "delays": watch.observe_delay}
    origin = Origin("bench", 0, 0, "-", utc_now())
    started = time.perf_counter()
    for topic, raw in encoded:
        observe[topic](contracts[topic].model_validate_json(raw), origin)
    return len(encoded) / (time.perf_counter() - started)


if __name__ == "__main__":
    os.environ.setdefault("RENTALSTREAM_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    main()
