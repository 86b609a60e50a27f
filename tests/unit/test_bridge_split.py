"""The live split's assignment of clients (``producers/bridge_split.py``), over many client ids."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from producers.bridge_split import arm, place

CLIENTS = [f"client-{i}" for i in range(20_000)]


@pytest.mark.parametrize("share", [0.05, 0.3, 0.5, 0.9])
def test_the_share_of_clients_answered_by_the_challenger_is_the_setting_within_binomial_noise(share):
    observed = sum(arm(client, share) == "challenger" for client in CLIENTS) / len(CLIENTS)
    assert abs(observed - share) <= 4 * math.sqrt(share * (1 - share) / len(CLIENTS)), observed


def test_a_client_always_gets_the_same_version_and_a_larger_share_only_moves_more_clients_over():
    first = {client: arm(client, 0.3) for client in CLIENTS[:2000]}
    assert {client: arm(client, 0.3) for client in CLIENTS[:2000]} == first
    at_half = {client: arm(client, 0.5) for client in CLIENTS[:2000]}
    assert all(at_half[c] == "challenger" for c, chosen in first.items() if chosen == "challenger")
    assert {arm(c, 0.0) for c in CLIENTS[:2000]} == {"champion"}
    assert {arm(c, 1.0) for c in CLIENTS[:2000]} == {"challenger"}


def test_a_clients_place_is_the_same_in_every_process():
    """Every bridge process must agree: another interpreter, with another str hash salt,
    places the clients where this one does."""
    code = "from producers.bridge_split import place; print([place(f'client-{i}') for i in range(50)])"
    other = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert other.stdout.strip() == str([place(f"client-{i}") for i in range(50)])
