"""Who may call ``/predict``, and how often.

**Keys.** ``RENTALSTREAM_BRIDGE_API_KEYS_FILE`` names a file of API keys, one per line::

    # client       SHA-256 of its key (hex)                                          limit
    pricing-svc    9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  50/second

Only each key's hash is stored: a key is 32 random bytes (``rentalstream api-key add``
makes one and prints it once), so a plain SHA-256 of it cannot be reversed, and looking
a presented key's hash up tells nothing about the others. A client may have several
lines, so a key is rotated by adding the new one, moving the callers, then removing the
old one. The file is read again within a second of a change, without a restart; a file
that no longer parses keeps the keys read before, and says why in the log.
``RENTALSTREAM_BRIDGE_API_KEY`` (one key, client ``default``) still works beside it.

**Limits.** Each client's requests are counted in a moving window (the ``limits``
library): the line's limit, else ``RENTALSTREAM_BRIDGE_RATE_LIMIT``. Past it, 429 with
``Retry-After``. Without keys, callers are told apart by their address.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import limits
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger("rentalstream.bridge.clients")
ANONYMOUS = "anonymous"  # the metrics' client when no key is required
SHARED = "default"  # the client of RENTALSTREAM_BRIDGE_API_KEY, one key for every caller
RELOAD_SECONDS = 1.0  # how often the keys file's modification time is looked at


class KeysFileError(ValueError):
    """A line of the keys file that is not ``<client> <sha256> [<limit>]``."""


@dataclass(frozen=True)
class Client:
    name: str
    limit: limits.RateLimitItem | None


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return secrets.token_urlsafe(32)


def parse_limit(text: str | None) -> limits.RateLimitItem | None:
    """``"50/second"``, ``"1000 per minute"``…: the ``limits`` library's notation."""
    return None if text is None else limits.parse(text)


def read_keys(path: Path) -> dict[str, Client]:
    """SHA-256 (hex) of each key → its client, from the file at ``path``."""
    clients: dict[str, Client] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split("#", 1)[0].split(None, 2)
        if not fields:
            continue
        if len(fields) < 2 or len(fields[1]) != 64 or any(c not in "0123456789abcdef" for c in fields[1]):
            raise KeysFileError(f"{path}:{number}: expected `<client> <SHA-256 of the key, 64 hex digits> [<limit>]`")
        try:
            limit = parse_limit(fields[2].strip() if len(fields) == 3 else None)
        except ValueError as error:
            raise KeysFileError(f"{path}:{number}: {error}") from None
        if fields[1] in clients:
            raise KeysFileError(f"{path}:{number}: this key is already {clients[fields[1]].name!r}'s")
        clients[fields[1]] = Client(fields[0], limit)
    return clients


def add_key(path: Path, client: str, limit: str | None = None) -> str:
    """Append a new key of ``client`` to the keys file (made, readable by its owner only,
    when missing); the key, which is not stored anywhere."""
    if not client or any(c.isspace() or c == "#" or not c.isprintable() for c in client):
        raise KeysFileError(f"a client name is one word without '#': {client!r}")
    parse_limit(limit)  # refuse a limit the bridge could not read
    key = new_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    with path.open("a") as keys:
        keys.write(f"{client} {key_digest(key)}{' ' + limit if limit else ''}\n")
    return key


class Clients:
    """The callers the bridge knows, and the requests each has left."""

    def __init__(
        self,
        keys_file: Path | None,
        single_key: str | None,
        default_limit: str | None,
        reload_seconds: float = RELOAD_SECONDS,
    ) -> None:
        self.keys_file = keys_file
        self.reload_seconds = reload_seconds
        self.single = {key_digest(single_key): Client(SHARED, None)} if single_key else {}
        self.default_limit = parse_limit(default_limit)
        self.keys: dict[str, Client] = {}
        self._read_at = -math.inf
        self._mtime: float | None = None
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        if keys_file is not None:
            self.keys = read_keys(keys_file)  # a bad file stops the start
            self._mtime = keys_file.stat().st_mtime

    @property
    def need_key(self) -> bool:
        return self.keys_file is not None or bool(self.single)

    def client_of(self, key: str | None) -> Client | None:
        """The client ``key`` belongs to; None when it is nobody's."""
        if key is None:
            return None
        self._follow_the_file()
        digest = key_digest(key)
        return self.keys.get(digest) or self.single.get(digest)

    def retry_after(self, client: Client, caller: str) -> int | None:
        """Count one request of ``client`` (``caller`` tells apart the anonymous ones);
        None while within its limit, else the seconds until it may ask again."""
        limit = client.limit or self.default_limit
        if limit is None:
            return None
        if self.limiter.hit(limit, "bridge", caller):
            return None
        reset_at = self.limiter.get_window_stats(limit, "bridge", caller).reset_time
        return max(1, math.ceil(reset_at - time.time()))

    def _follow_the_file(self) -> None:
        if self.keys_file is None or time.monotonic() - self._read_at < self.reload_seconds:
            return
        self._read_at = time.monotonic()
        try:
            mtime = self.keys_file.stat().st_mtime
            if mtime == self._mtime:
                return
            self._mtime = mtime  # a file that does not parse is reported once, not every second
            self.keys = read_keys(self.keys_file)
        except (OSError, KeysFileError) as error:
            log.error("keeping the API keys read before: %s", error)
            return
        log.info("API keys read again from %s: %d keys of %d clients", self.keys_file, len(self.keys), self.count())

    def count(self) -> int:
        return len({client.name for client in self.keys.values()})
