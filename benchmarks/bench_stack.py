"""The stack every benchmark runs on: fresh, embedded, in a temporary home, with a
trained champion and only the services the benchmark measures, on free ports."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rentalstream import embedded, services, stack
from rentalstream.settings import Settings


@contextmanager
def fresh_stack(wanted: tuple[services.Service, ...] = (), keep_home: bool = False) -> Iterator[tuple[Settings, dict]]:
    """(settings, stack state with the started services' pids and URLs); everything is
    stopped, and the home removed unless ``keep_home``, on the way out."""
    home = Path(tempfile.mkdtemp(prefix="rentalstream-bench-"))
    os.environ.setdefault("RENTALSTREAM_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    os.environ.update({"RENTALSTREAM_HOME": str(home), "RENTALSTREAM_LOG_LEVEL": "WARNING"})
    for service in services.ALL:
        os.environ[f"RENTALSTREAM_{service.port_setting.upper()}"] = str(embedded.free_port())
    settings = Settings()
    try:
        print(f"starting a fresh stack in {home}, the champion (trained if missing) and "
              f"{', '.join(s.name for s in wanted) or 'no service'}...", flush=True)  # fmt: skip
        state, _ = stack.up_with_services(settings, wanted)
        yield settings, state
    finally:
        stack.down(settings)
        if not keep_home:
            shutil.rmtree(home, ignore_errors=True)
