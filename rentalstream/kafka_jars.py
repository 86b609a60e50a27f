"""The jars of the embedded Apache Kafka, fetched from Maven Central and checked.

``apache-kafka/pom.xml`` says what the broker and the tools need; Maven resolves it once,
and the resolved set is pinned in ``apache-kafka/jars.lock``: one line per jar, its
coordinates, its SHA-256 and its size. ``ensure_jars`` downloads what the cache lacks,
checks every file against the lock and returns the folder to put on the classpath, so
running Kafka needs Python and a Java runtime, not Maven. A jar whose digest differs from
the lock is refused, never used.

To move to another Kafka version, change ``pom.xml`` and rewrite the lock (needs ``mvn``)::

    python -m rentalstream.kafka_jars lock
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

DISTRIBUTION = Path(__file__).with_name("apache-kafka")
POM = DISTRIBUTION / "pom.xml"
LOCK = DISTRIBUTION / "jars.lock"
MAVEN_CENTRAL = "https://repo1.maven.org/maven2"


class JarMismatch(RuntimeError):
    """A downloaded jar is not the one the lock pins."""


@dataclass(frozen=True)
class Jar:
    group: str
    artifact: str
    version: str
    sha256: str
    size: int

    @property
    def coordinates(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"

    @property
    def file_name(self) -> str:
        return f"{self.artifact}-{self.version}.jar"

    def url(self, repository: str) -> str:
        return (
            f"{repository.rstrip('/')}/{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.file_name}"
        )


def locked_jars(lock: Path = LOCK) -> list[Jar]:
    """The jars ``lock`` pins, in its order."""
    jars = []
    for line in lock.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        coordinates, sha256, size = line.split()
        group, artifact, version = coordinates.split(":")
        jars.append(Jar(group, artifact, version, sha256, int(size)))
    return jars


def kafka_version(lock: Path = LOCK) -> str:
    """The Apache Kafka version the lock pins (that of ``kafka_2.13``)."""
    return next(j.version for j in locked_jars(lock) if j.artifact == "kafka_2.13")


def ensure_jars(
    cache_dir: Path,
    repository: str = MAVEN_CENTRAL,
    on_progress: Callable[[Jar], None] = lambda jar: None,
    lock: Path = LOCK,
) -> Path:
    """The folder holding every jar of ``lock``, each checked against its SHA-256;
    missing ones are downloaded from ``repository`` first (``on_progress`` is called as
    each arrives). Checked folders are marked, so a later call costs a few stat calls."""
    jars = locked_jars(lock)
    folder = cache_dir.expanduser() / f"kafka-{kafka_version(lock)}"
    stamp = folder / ".checked"
    pins = hashlib.sha256(lock.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == pins and all((folder / j.file_name).exists() for j in jars):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    missing = [j for j in jars if not _is_pinned_file(folder / j.file_name, j)]
    with httpx.Client(timeout=60, follow_redirects=True) as client, ThreadPoolExecutor(max_workers=6) as pool:
        for jar in pool.map(lambda jar: _download(client, jar, repository, folder), missing):
            on_progress(jar)
    stale = {p.name for p in folder.glob("*.jar")} - {j.file_name for j in jars}
    for name in stale:  # a jar of an older lock would shadow classes on the classpath
        (folder / name).unlink()
    stamp.write_text(pins)
    return folder


def _is_pinned_file(path: Path, jar: Jar) -> bool:
    return path.exists() and path.stat().st_size == jar.size and _sha256(path) == jar.sha256


def _worth_retrying(error: BaseException) -> bool:
    """A dropped connection or a server error may pass; a 404 will not."""
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code >= 500
    return isinstance(error, httpx.TransportError)


@retry(
    retry=retry_if_exception(_worth_retrying),
    wait=wait_exponential(multiplier=0.5, max=8),
    stop=stop_after_attempt(4),
    reraise=True,
)
def _download(client: httpx.Client, jar: Jar, repository: str, folder: Path) -> Jar:
    url = jar.url(repository)
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".part", delete=False) as part:
        try:
            with client.stream("GET", url) as response:
                response.raise_for_status()
                for chunk in response.iter_bytes(1 << 16):
                    part.write(chunk)
            part.close()
            digest = _sha256(Path(part.name))
            if digest != jar.sha256:
                raise JarMismatch(f"{url} has SHA-256 {digest}, but {LOCK.name} pins {jar.sha256}; not using it")
            os.replace(part.name, folder / jar.file_name)
        finally:
            Path(part.name).unlink(missing_ok=True)
    return jar


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_lock(pom: Path = POM, lock: Path = LOCK) -> list[Jar]:
    """Resolve ``pom`` with Maven (checksums checked strictly against the repository) and
    pin what it resolved in ``lock``."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise SystemExit("writing the lock needs Maven (mvn) on the PATH")
    with tempfile.TemporaryDirectory() as scratch:
        listing = Path(scratch) / "dependencies.txt"
        subprocess.run(
            [
                mvn,
                "--batch-mode",
                "--quiet",
                "--strict-checksums",
                "-Dstyle.color=never",
                "-f",
                str(pom),
                "dependency:list",
                "-DincludeScope=runtime",
                "-DoutputAbsoluteArtifactFilename=true",
                f"-DoutputFile={listing}",
            ],
            check=True,
        )
        jars = []
        for line in listing.read_text().splitlines():
            parts = line.strip().split(":")
            if len(parts) < 6 or parts[2] != "jar":
                continue
            group, artifact, _, version, _scope, path = parts[:6]
            file = Path(path)
            jars.append(Jar(group, artifact, version, _sha256(file), file.stat().st_size))
    jars.sort(key=lambda j: j.coordinates)
    version = next(j.version for j in jars if j.artifact == "kafka_2.13")
    header = [
        f"# Apache Kafka {version}: the broker, its storage tool and the command-line tools, with log4j2.",
        f"# Resolved from {pom.name} by `python -m rentalstream.kafka_jars lock`; do not edit by hand.",
        "# coordinates  sha256  bytes",
    ]
    lock.write_text("\n".join([*header, *(f"{j.coordinates} {j.sha256} {j.size}" for j in jars)]) + "\n")
    return jars


if __name__ == "__main__":
    if sys.argv[1:] != ["lock"]:
        raise SystemExit("usage: python -m rentalstream.kafka_jars lock")
    pinned = write_lock()
    print(f"{LOCK}: {len(pinned)} jars of Apache Kafka {kafka_version()}")
