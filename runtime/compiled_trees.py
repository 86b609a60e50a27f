"""The price model's trees compiled to machine code with lleaves, cached on disk.

LightGBM walks the trees of every car in its generic interpreter: ~140 µs per car for
the champion's 1,787 trees on one core here. lleaves compiles the same trees (LLVM) into
one function: ~15 µs per car, with the same predictions (checked on load). The trees are
compiled as functions of their own, not inlined into the forest (``INLINE_TREES``):
inlined they priced 3.3 µs per car faster (12.1 against 15.4) but took 6x as long to
compile, 121 s of a core against 19 s (``benchmarks/tree_compilation.py``;
docs/decisions.md).

Compiling takes ~20 s of one core, so it happens once per model version and machine:
- at registration (``training.train``): the object is logged with the version as
  ``compiled-trees/<platform_tag()>/<digest>.o``; on the same platform the scorer's
  registry process fetches it into the cache with the model and checks it against the
  booster (``runtime.prepared_versions.prepare``), and the scorer prices with it from
  its first batch;
- otherwise in the scorer, in a child process (``python -m runtime.compiled_trees
  MODEL_TXT OUTPUT PARENT_PID``), while the booster prices; the compiled model is checked
  and swapped in between two batches.

The object file is cached under ``model_cache_dir`` by the SHA-256 of the model text,
beside a ``.checked`` note (the object's own SHA-256) once it has predicted what the
booster predicts, so a restart loads it without the booster.

lleaves compiles; loading is ``load_object`` here, on llvmlite, because importing lleaves
imports pandas (+85 MiB in a process that only prices; docs/decisions.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import functools
import hashlib
import itertools
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from schemas.cars import CATEGORICAL, EQUIPMENT, NUMERIC
from schemas.features import FEATURES

log = logging.getLogger("rentalstream.scorer")
COMPILED_ARTIFACTS = "compiled-trees"  # <platform tag>/<digest>.o, in the training run of a version
PROBE_ROWS = 2000
MAX_DIFFERENCE = 1e-6  # euros; observed differences are ~1e-12 (summation order)


class CompileFailed(RuntimeError):
    pass


INLINE_TREES = False  # lleaves' finline: see the module's docstring
ENTRY_POINT = "forest_root"  # lleaves' name for the compiled forest: (rows, out, first, end) -> None
_Entry = ctypes.CFUNCTYPE(
    None, ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_double), ctypes.c_int32, ctypes.c_int32
)


@dataclass(frozen=True)
class CompiledTrees:
    """A compiled model: ``predict`` takes the same matrix as the booster."""

    engine: Any  # llvmlite's execution engine: it owns the machine code, so it lives as long as this
    entry: Any  # the forest's entry point, a ctypes function (it releases the GIL while it runs)
    path: Path

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(matrix, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != len(FEATURES):
            raise ValueError(f"expected a matrix of {len(FEATURES)} features, got shape {rows.shape}")
        predicted = np.zeros(len(rows), dtype=np.float64)
        as_doubles = ctypes.POINTER(ctypes.c_double)
        rows_in, out = rows.ctypes.data_as(as_doubles), predicted.ctypes.data_as(as_doubles)
        chunks = _chunks(len(rows))
        if len(chunks) == 1:
            self.entry(rows_in, out, 0, len(rows))
        else:  # the entry point lets go of the GIL: the chunks run on every core, as lleaves' own predict does
            list(_pool().map(lambda chunk: self.entry(rows_in, out, *chunk), chunks))
        return predicted


# Below this many rows, one thread prices (compiled trees here, LightGBM's booster in
# scorer.pricing): handing rows to other threads costs more than it saves.
PARALLEL_FROM_ROWS = 500


def _chunks(rows: int) -> list[tuple[int, int]]:
    """``[first, end)`` ranges splitting ``rows`` evenly over the cores, one range for a small batch."""
    parts = 1 if rows < PARALLEL_FROM_ROWS else min(os.cpu_count() or 1, rows // (PARALLEL_FROM_ROWS // 2))
    bounds = [rows * i // parts for i in range(parts + 1)]
    return list(itertools.pairwise(bounds))


@functools.cache
def _pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count(), thread_name_prefix="compiled-trees")


def load_object(object_path: Path) -> CompiledTrees:
    """The compiled trees in ``object_path``, linked into this process as lleaves does
    (an MCJIT engine of the host's CPU and large code model, fed the object as its cache)."""
    import llvmlite.binding as llvm

    llvm.initialize()
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    machine = llvm.Target.from_triple(llvm.get_process_triple()).create_target_machine(
        cpu=llvm.get_host_cpu_name(),
        features=llvm.get_host_cpu_features().flatten(),
        reloc="pic",
        codemodel="large",
    )
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), machine)
    code = object_path.read_bytes()
    engine.set_object_cache(getbuffer_func=lambda _module: code)
    engine.finalize_object()
    engine.run_static_constructors()
    address = engine.get_function_address(ENTRY_POINT)
    if not address:
        raise CompileFailed(f"{object_path} has no {ENTRY_POINT} function")
    return CompiledTrees(engine, _Entry(address), object_path)


def checked_note(object_path: Path) -> Path:
    """Where the SHA-256 of ``object_path`` is noted once it has been checked against its booster."""
    return object_path.with_suffix(".checked")


def checked_before(text_path: Path, object_path: Path) -> bool:
    """Whether ``object_path`` was checked against the booster of ``text_path`` (named by
    its digest, as ``cache_paths`` names both) and neither has changed since."""
    note = checked_note(object_path)
    if not (note.exists() and text_path.exists() and object_path.exists()):
        return False
    digest = text_path.stem
    return (
        hashlib.sha256(text_path.read_bytes()).hexdigest()[: len(digest)] == digest
        and note.read_text().strip() == hashlib.sha256(object_path.read_bytes()).hexdigest()
    )


def cache_paths(cache_dir: Path, model_text: str) -> tuple[Path, Path]:
    """(model text, compiled object) paths of ``model_text`` in ``cache_dir``."""
    digest = hashlib.sha256(model_text.encode()).hexdigest()[:32]
    return cache_dir / f"{digest}.txt", cache_dir / f"{digest}.o"


def platform_tag() -> str:
    """What a compiled object runs on: lleaves compiles for the host's CPU (its name and
    features), so an object is only reused where all three match: ``<triple>-<cpu>-<features' hash>``."""
    import llvmlite.binding as llvm

    features = hashlib.sha256(llvm.get_host_cpu_features().flatten().encode()).hexdigest()[:12]
    return f"{llvm.get_process_triple()}-{llvm.get_host_cpu_name()}-{features}"


def platform_folder() -> str:
    """The folder of a version's run artifacts that holds its compiled object for this platform."""
    return f"{COMPILED_ARTIFACTS}/{platform_tag()}"


def compile_for_registration(booster: Any, cache_dir: Path) -> Path:
    """Compile ``booster`` into ``cache_dir`` (unless there already) in a child process,
    check it against the booster, and return the object's path. For training, which is
    not asynchronous."""
    text_path, object_path = write_model_text(booster, cache_dir)
    if not object_path.exists():
        child = subprocess.run(
            [sys.executable, "-m", "runtime.compiled_trees", str(text_path), str(object_path), str(os.getpid())],
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            raise CompileFailed(f"compiling the trees failed ({child.returncode}): {child.stderr[-2000:]}")
    check_compiled(booster, object_path)
    return object_path


def write_whole(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: another process may be reading the cache."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    partial.replace(path)


def write_model_text(booster: Any, cache_dir: Path) -> tuple[Path, Path]:
    """Write ``booster``'s model text into ``cache_dir`` (unless there); its path and its compiled object's."""
    model_text = booster.model_to_string()
    text_path, object_path = cache_paths(cache_dir, model_text)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not text_path.exists():  # written whole, then renamed: another scorer may be reading
        write_whole(text_path, model_text)
    return text_path, object_path


def check_compiled(booster: Any, object_path: Path) -> CompiledTrees:
    """The compiled trees in ``object_path``, once checked against ``booster`` (and noted so)."""
    return _checked(booster, load_object(object_path))


def _checked(booster: Any, compiled: CompiledTrees) -> CompiledTrees:
    difference = _largest_difference(booster, compiled)
    if not difference <= MAX_DIFFERENCE:
        raise CompileFailed(f"the compiled trees differ from the booster by up to {difference} on the probe cars")
    note = checked_note(compiled.path)
    write_whole(note, hashlib.sha256(compiled.path.read_bytes()).hexdigest())
    return compiled


async def compile_trees(booster: Any, cache_dir: Path) -> CompiledTrees:
    """The compiled form of ``booster``: from the cache, or compiled in a child process.

    Raises ``CompileFailed`` if lleaves is missing, the compilation fails, or the
    compiled model does not predict what the booster predicts."""
    text_path, object_path = await asyncio.to_thread(write_model_text, booster, cache_dir)
    if not object_path.exists():
        log.info("compiling the model's trees into %s (once per model version)", object_path)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "runtime.compiled_trees",
            str(text_path),
            str(object_path),
            str(os.getpid()),
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, stderr = await child.communicate()
        except asyncio.CancelledError:
            child.kill()
            await child.wait()
            raise
        if child.returncode != 0:
            raise CompileFailed(f"compiling the trees failed ({child.returncode}): {stderr.decode()[-2000:]}")
    return await asyncio.to_thread(check_compiled, booster, object_path)


def _largest_difference(booster: Any, compiled: CompiledTrees) -> float:
    probe = probe_matrix(PROBE_ROWS)
    return float(np.max(np.abs(booster.predict(probe, num_threads=1) - compiled.predict(probe))))


def probe_matrix(rows: int, seed: int = 0) -> np.ndarray:
    """Cars over the whole range of every feature, unknown categories included (NaN)."""
    rng = np.random.default_rng(seed)
    columns = [
        rng.uniform(0, 1_000_000, rows),  # mileage
        rng.uniform(1, 500, rows),  # engine_power
        *(
            np.where(rng.random(rows) < 0.05, np.nan, rng.integers(0, len(values), rows))
            for values in CATEGORICAL.values()
        ),
        *(rng.integers(0, 2, rows) for _ in EQUIPMENT),
    ]
    assert len(columns) == len(NUMERIC) + len(CATEGORICAL) + len(EQUIPMENT)
    return np.column_stack(columns).astype(np.float64)


def die_with(parent: int) -> None:
    """Ask Linux to kill this process when ``parent`` (the scorer, or training) dies, SIGKILL included;
    exit now if it already has."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        sys.exit("the process that asked for this compilation is gone")


def compile_object(text_path: str, object_path: str, *, inline: bool = INLINE_TREES) -> None:
    """Compile the model text ``text_path`` into ``object_path``, atomically (several
    scorers may race)."""
    import lleaves

    partial = Path(f"{object_path}.{os.getpid()}.partial")
    lleaves.Model(model_file=text_path).compile(cache=str(partial), finline=inline)
    partial.replace(object_path)


def main(text_path: str, object_path: str, parent: str) -> None:
    die_with(int(parent))
    compile_object(text_path, object_path)


if __name__ == "__main__":
    main(*sys.argv[1:])
