"""The scorer under faults, against Apache Kafka and PostgreSQL: SIGKILL three times
during a replay of the whole history, and SIGTERM in the middle of one. Whatever happens,
Postgres ends up holding every rental exactly once, with the values of a run that was
never interrupted; and since the scorer publishes each batch's results in a Kafka
transaction with its input offsets, a read_committed reader of `prices` sees each
rental's price exactly once, while the aborted attempts stay visible to a reader that
does not ask for committed data only."""

import asyncio
import random
import signal
import time
from functools import partial

import pytest

from producers.replay import rental_events
from rentalstream.processes import free_port
from tests.compose import SERVICES
from tests.helpers import read_topic, wait_for
from tests.reliability.scorer_runs import (
    OpenTransaction,
    assert_same_results,
    committed,
    replay_in_background,
    snapshot,
    stored_rentals,
    truncate,
    wait_for_rentals,
)

pytestmark = pytest.mark.reliability
GRACE_SECONDS = int(SERVICES["scorer"]["stop_grace_period"].removesuffix("s"))  # compose.yaml


def test_three_sigkills_during_a_replay_leave_every_rental_stored_once_as_a_clean_run_does(
    scorer, scorer_env, clean_database, delays_xlsx, pricing_csv
):
    bootstrap = scorer_env["RENTALSTREAM_KAFKA_BOOTSTRAP"]
    events = rental_events(delays_xlsx, pricing_csv)
    rng = random.Random(2026)

    # The crashing run: the replay goes on while the scorer is killed three times at random points.
    scorer.env = {**scorer_env, "RENTALSTREAM_SCORER_GROUP_ID": "crashing"}
    scorer.start()
    scorer.wait_ready()
    # ~27 s of replay: three kills and restarts (each ~5 s to import, load the model and
    # take its partitions back) land in the middle of it.
    replay = replay_in_background(bootstrap, events, rate=800)
    kills, restarts, probes = [], [], []
    with OpenTransaction(bootstrap, "prices") as open_transaction:
        for _ in range(3):
            # The victim has stored something since it started, then it is killed at the
            # worst moment: its batch's rows committed in Postgres, its Kafka transaction
            # (results and offsets) open. Frozen (SIGSTOP) at random moments until the
            # broker shows one of its transactions open, then SIGKILLed: no race.
            time.sleep(rng.uniform(0.5, 2.0))
            wait_for(
                partial(stored_more, clean_database, stored_rentals(clean_database)),
                30,
                "the victim to store rentals",
                scorer.process,
            )
            tries = 0
            while replay.is_alive():
                tries += 1
                time.sleep(rng.uniform(0, 0.02))
                scorer.process.send_signal(signal.SIGSTOP)
                if open_transaction():
                    break
                scorer.process.send_signal(signal.SIGCONT)
            assert replay.is_alive(), f"kill {len(kills) + 1} would land after the replay"
            kills.append(stored_rentals(clean_database))
            probes.append(tries)
            scorer.signal(signal.SIGKILL)
            restarted_at = time.monotonic()
            scorer.start()
            scorer.wait_ready()
            restarts.append(time.monotonic() - restarted_at)
    replay.join()
    wait_for_rentals(clean_database, len(events), scorer)
    crashed = snapshot(clean_database)
    prices_committed = [r.key.decode() for r in asyncio.run(read_topic(bootstrap, "prices"))]
    prices_all = [r.key for r in asyncio.run(read_topic(bootstrap, "prices", isolation_level="read_uncommitted"))]
    scorer.stop()

    # The clean run: a new group reads the same topic from the start, nobody interrupts it.
    truncate(clean_database)
    scorer.env = {**scorer_env, "RENTALSTREAM_SCORER_GROUP_ID": "clean", "RENTALSTREAM_SCORER_PORT": str(free_port())}
    scorer.url = f"http://127.0.0.1:{scorer.env['RENTALSTREAM_SCORER_PORT']}"
    scorer.start()
    wait_for_rentals(clean_database, len(events), scorer)
    clean = snapshot(clean_database)

    aborted = len(prices_all) - len(prices_committed)
    print(
        f"published {len(events):,} rentals; SIGKILL inside an open transaction (found in {probes} freezes) "
        f"with {kills} rentals stored, each restart ready in "
        f"{', '.join(f'{r:.1f}' for r in restarts)} s; afterwards "
        f"{len(crashed['rentals']):,} rentals, {len(crashed['prices']):,} prices, {len(crashed['delays']):,} "
        f"delay facts, {len(crashed['dead_letters'])} dead letters stored; on `prices`, read_committed: "
        f"{len(prices_committed):,} messages, {len(set(prices_committed)):,} distinct; read_uncommitted: "
        f"{len(prices_all):,} ({aborted:,} from aborted transactions)"
    )
    assert_same_results(crashed, clean, len(events))
    # Exactly once for a read_committed reader, however many attempts were cut short.
    assert sorted(prices_committed) == sorted(f"rental-{e.rental_id}" for e in events)
    # And the kills did cut transactions short: what they had written was aborted, not lost or doubled.
    assert aborted > 0


def test_sigterm_finishes_the_batch_commits_and_exits_then_the_restart_resumes_without_gaps_or_duplicates(
    scorer, scorer_env, clean_database, delays_xlsx, pricing_csv
):
    bootstrap = scorer_env["RENTALSTREAM_KAFKA_BOOTSTRAP"]
    group = f"{scorer_env.get('RENTALSTREAM_SCORER_GROUP_ID', 'rentalstream-scorer')}.rentals"
    events = rental_events(delays_xlsx, pricing_csv)
    scorer.start()
    scorer.wait_ready()
    replay = replay_in_background(bootstrap, events, rate=3000)
    wait_for_rentals(clean_database, 4000, scorer)
    exit_seconds = scorer.signal(signal.SIGTERM)
    # Everything it stored is committed, and everything committed is stored: the last
    # batch was finished, written and committed before the process left.
    stored, done = stored_rentals(clean_database), asyncio.run(committed(bootstrap, group, "rentals"))
    print(
        f"SIGTERM: exited in {exit_seconds:.2f} s (code {scorer.process.returncode}) with {stored:,} rentals "
        f"stored and {done:,} committed"
    )
    # The graceful shutdown ran to its end; uvicorn then re-raises the SIGTERM it caught, so
    # the exit status is "terminated by SIGTERM", as a supervisor expects.
    assert "FastStream app shut down gracefully" in scorer.log.read_text()
    assert scorer.process.returncode in (0, -signal.SIGTERM)
    # Within the time compose's supervisor gives it before a SIGKILL would cut the batch short.
    assert exit_seconds < GRACE_SECONDS
    assert 4000 <= stored == done < len(events)

    scorer.start()
    replay.join()
    wait_for_rentals(clean_database, len(events), scorer)
    resumed = snapshot(clean_database)
    assert len(resumed["rentals"]) == len(events) and resumed["rentals"]["rental_id"].is_unique
    assert sorted(resumed["rentals"]["rental_id"]) == sorted(e.rental_id for e in events)
    assert resumed["dead_letters"].empty
    assert asyncio.run(committed(bootstrap, group, "rentals")) == len(events)


def stored_more(url: str, than: int) -> bool:
    return stored_rentals(url) > than
