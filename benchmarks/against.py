"""``--against REF``: run a benchmark on a git ref and on this tree in the same session,
alternately, so a figure is compared with the previous main's measured minutes apart on
the same machine (these machines vary by ±30% from day to day).

The ref is checked out in a temporary git worktree and run with this tree's virtual
environment, its own code first on ``PYTHONPATH`` (the services it starts inherit it).
A benchmark the ref does not have yet runs from this tree, on the ref's code.
Each run's output is shown as it ends; the lines that carry its figures are repeated side
by side at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared" / "data"  # where bench_stack looks by default


def add_against_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--against",
        metavar="REF",
        help="also run this benchmark on git REF (e.g. origin/main, a commit) in the same session, alternately",
    )
    parser.add_argument("--rounds", type=int, default=2, help="with --against: runs of each tree (default 2)")


def parse_or_compare(parser: argparse.ArgumentParser, figures: str) -> argparse.Namespace | None:
    """The arguments, with ``--against``/``--rounds`` added; None when ``--against`` was
    given and the comparison has run (the caller then returns)."""
    add_against_option(parser)
    args = parser.parse_args()
    if args.against:
        run_against(args.against, args.rounds, figures)
        return None
    return args


def run_against(ref: str, rounds: int, figures: str) -> None:
    """Run the calling script (its arguments minus ``--against``/``--rounds``) on ``ref``
    and on this tree, ``rounds`` times each, alternating (ABBA); then print the lines
    matching ``figures`` (a regular expression) of every run."""
    argv = _without_against(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="bench-ref-") as folder:
        tree = Path(folder) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(tree), ref], cwd=REPO, check=True)
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True, check=True
            ).stdout.strip()
            here = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
            ).stdout.strip()
            variants = [(f"{ref} ({commit})", tree, argv), (f"this tree ({here}, with its changes)", REPO, argv)]
            run_variants(variants, rounds, figures)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False)


def run_variants(variants: list[tuple[str, Path, list[str]]], rounds: int, figures: str) -> None:
    """Run the calling script once per (label, tree, arguments) of ``variants`` in each of
    ``rounds`` rounds, alternating (ABBA); then print the lines matching ``figures`` (a
    regular expression) of every run, side by side."""
    script = Path(sys.argv[0]).resolve().relative_to(REPO)
    pattern = re.compile(figures)
    collected: list[tuple[str, list[str]]] = []
    for round_number in range(1, rounds + 1):
        # ABBA: the variant that runs last in one round runs first in the next, so a
        # machine that slows (or warms up) during a round favours none.
        for label, root, argv in variants if round_number % 2 else variants[::-1]:
            print(f"=== round {round_number}/{rounds}: {label}: {script} {' '.join(argv)}", flush=True)
            output = _run(root, script, argv)
            collected.append((f"round {round_number}, {label}", [ln for ln in output if pattern.search(ln)]))
    print("\n=== side by side")
    for label, lines in collected:
        print(f"--- {label}")
        for line in lines:
            print(f"    {line}")


def _run(root: Path, script: Path, argv: list[str]) -> list[str]:
    env = {
        # The ref's worktree lies elsewhere: give both trees this checkout's datasets, so
        # neither looks for them beside itself and tries to download them.
        "RENTALSTREAM_DATA_DIR": str(DATA_DIR),
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), str(root / "benchmarks")]),
    }
    program = root / script
    if not program.exists():  # a benchmark newer than the ref: this tree's script on the ref's code
        program = REPO / script
        print(f"({script} is not in {root}: running this tree's copy on that tree's code)", flush=True)
    process = subprocess.Popen(
        [sys.executable, str(program), *argv],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line.rstrip("\n"))
    if process.wait() != 0:
        raise SystemExit(f"{script} failed in {root} (exit code {process.returncode})")
    return lines


def _without_against(argv: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--against", "--rounds"):
            skip = True
            continue
        if arg.startswith(("--against=", "--rounds=")):
            continue
        kept.append(arg)
    return kept
