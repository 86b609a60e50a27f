"""`make demo`'s first run on a machine: how long after the replay's last publish its last
row is committed, and how long the whole first run takes.

    python benchmarks/demo_first_run.py [--against REF --rounds 2]

Runs ``rentalstream demo --no-wait`` in an empty folder, with an empty model cache
(``RENTALSTREAM_SCORER_MODEL_CACHE_DIR``), so the model is trained, registered and
compiled as on a fresh clone; the datasets come from ``RENTALSTREAM_DATA_DIR`` (or
``../shared/data``). Prints the demo's own figure ("last row committed N s after the last
event was published") and the wall time. The target is at most 2 s after the last publish.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from against import DATA_DIR, parse_or_compare

FIGURES = r"^(demo |conditions)"
LAST_COMMIT = re.compile(r"last row committed ([\d.]+) s after the last event was published")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args = parse_or_compare(parser, FIGURES)
    if args is None:
        return
    with tempfile.TemporaryDirectory(prefix="demo-first-run-") as folder:
        env = {
            **os.environ,
            "RENTALSTREAM_DATA_DIR": os.environ.get("RENTALSTREAM_DATA_DIR", str(DATA_DIR)),
            "RENTALSTREAM_SCORER_MODEL_CACHE_DIR": str(Path(folder) / "model-cache"),
            "COLUMNS": "200",  # one line per figure: rich wraps at the terminal's width
        }
        started = time.monotonic()
        demo = subprocess.run(
            [sys.executable, "-m", "rentalstream.cli", "demo", "--no-wait"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.monotonic() - started
    found = LAST_COMMIT.search(demo.stdout)
    if demo.returncode != 0 or found is None:
        sys.exit(f"the demo failed ({demo.returncode}):\n{demo.stdout[-3000:]}\n{demo.stderr[-3000:]}")
    print(f"conditions: `rentalstream demo --no-wait` in an empty folder and model cache; {os.cpu_count()} CPU cores")
    print(f"demo last row committed {float(found.group(1)):.2f} s after the last publish")
    print(f"demo first run took {wall:.0f} s (training, compiling, the stack, the replay)")


if __name__ == "__main__":
    main()
