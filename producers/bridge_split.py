"""The live split: which ``/predict`` callers are answered with the challenger's price.

``RENTALSTREAM_BRIDGE_CHALLENGER_SHARE`` of the callers, told apart by their client id
(the API key's client, else ``X-Client-Id``, else their address), are answered with the
challenger's price while a challenger is set. The split is sticky: a client's place is a
hash of its id, so it gets the same version on every request, from every bridge process,
and across restarts; raising the share only moves more clients over. Both versions price
every request either way (shadow scoring), so ``rentalstream compare`` still sees both.

>>> arm("pricing-svc", 0.0), arm("pricing-svc", 1.0)
('champion', 'challenger')
>>> round(place("pricing-svc"), 3)
0.375
"""

from __future__ import annotations

import hashlib

from schemas.events import Arm


def place(client: str) -> float:
    """Where ``client`` stands in [0, 1): the first 8 bytes of its id's BLAKE2b hash.
    Stable across processes and versions (Python's own ``hash`` of a str is salted)."""
    digest = hashlib.blake2b(client.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def arm(client: str, share: float) -> Arm:
    """``challenger`` for the clients placed below ``share``, else ``champion``."""
    return "challenger" if share > 0 and place(client) < share else "champion"
