"""Refresh the committed snapshot of known Python vulnerabilities that `make audit` and
`tests/unit/test_known_vulnerabilities.py` check the locks against, offline.

The snapshot is osv-scanner's local database for PyPI: `osv-db/osv-scalibr/PyPI/all.zip`,
one OSV JSON record per advisory, the layout in which osv.dev publishes each ecosystem.
Two sources write it:

- a checkout (bare or not) of the Python Packaging Advisory Database, whose records are
  YAML: ``python security/refresh_advisories.py from-checkout PATH``. These are the
  records PyPI's own JSON API answers with, so `pip-audit`'s default service sees the
  same advisories;
- osv.dev's own PyPI export, which also holds GitHub's reviewed advisories:
  ``python security/refresh_advisories.py from-export all.zip``.

Either way `osv-db/snapshot.json` records where the records came from, as of when, and
how many there are, and the audit prints it. Commit both files.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.progress import track

HERE = Path(__file__).resolve().parent
DATABASE = HERE / "osv-db" / "osv-scalibr" / "PyPI" / "all.zip"
SNAPSHOT = HERE / "osv-db" / "snapshot.json"
# The same bytes for the same records: members sorted, with a fixed time.
MEMBER_TIME = (1980, 1, 1, 0, 0, 0)

app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


class _OsvYamlLoader(yaml.SafeLoader):
    """YAML as OSV means it: an unquoted time stays the RFC 3339 string the schema
    requires instead of becoming a Python datetime."""


_OsvYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _git(checkout: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, check=True)


def checkout_records(checkout: Path) -> dict[str, dict]:
    """Every advisory under `vulns/` at the checkout's HEAD, by its file's name."""
    archive = _git(checkout, "archive", "--format=tar", "HEAD", "vulns").stdout
    records: dict[str, dict] = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".yaml")]
        for member in track(members, description="reading advisories"):
            record = yaml.load(tar.extractfile(member).read(), Loader=_OsvYamlLoader)
            _check_record(record, member.name)
            records[Path(member.name).stem] = record
    return records


def _check_record(record: object, where: str) -> None:
    if not (isinstance(record, dict) and isinstance(record.get("id"), str) and isinstance(record.get("modified"), str)):
        raise typer.BadParameter(f"{where} is not an OSV record (an id and a modified time)")


def write_database(records: dict[str, dict]) -> None:
    DATABASE.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(DATABASE, "w", zipfile.ZIP_DEFLATED) as database:
        for name in sorted(records):
            member = zipfile.ZipInfo(f"{name}.json", MEMBER_TIME)
            member.compress_type = zipfile.ZIP_DEFLATED
            database.writestr(member, json.dumps(records[name], sort_keys=True))


def write_snapshot(source: str, as_of: str, advisories: int) -> None:
    snapshot = {"source": source, "as_of": as_of, "advisories": advisories}
    SNAPSHOT.write_text(json.dumps(snapshot, indent=2) + "\n")
    typer.echo(f"{DATABASE.relative_to(HERE.parent)}: {advisories:,} advisories from {source}, as of {as_of}")


@app.command()
def from_checkout(
    checkout: Annotated[Path, typer.Argument(help="a clone of the Python Packaging Advisory Database (bare is fine)")],
) -> None:
    """Convert the checkout's YAML records at HEAD."""
    try:
        commit, committed = _git(checkout, "log", "-1", "--format=%H %cI", "HEAD").stdout.decode().split()
    except subprocess.CalledProcessError as error:
        raise typer.BadParameter(f"{checkout} is not a git checkout: {error.stderr.decode().strip()}") from error
    records = checkout_records(checkout)
    write_database(records)
    write_snapshot(f"pypa/advisory-database at {commit}", committed, len(records))


@app.command()
def from_export(
    export: Annotated[Path, typer.Argument(help="osv.dev's PyPI export (PyPI/all.zip of its vulnerability bucket)")],
) -> None:
    """Take osv.dev's export as it is, after checking every member is an OSV record. Its
    date is the file's (`curl -R` keeps the server's)."""
    with zipfile.ZipFile(export) as archive:
        names = [n for n in archive.namelist() if n.endswith(".json")]
        for name in track(names, description="checking advisories"):
            _check_record(json.loads(archive.read(name)), name)
    shutil.copyfile(export, DATABASE)
    as_of = datetime.fromtimestamp(export.stat().st_mtime, UTC).isoformat(timespec="seconds")
    write_snapshot("osv.dev's PyPI export", as_of, len(names))


if __name__ == "__main__":
    app()
