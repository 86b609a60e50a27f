"""No locked version has a known vulnerability: osv-scanner (built by `make`) checks both
locks, offline, against the committed snapshot of PyPI's advisories in security/.

The scanner and its database are checked too, so that a scan finding nothing means
something: a planted vulnerable pin is found, with the advisories its own text names, and
every advisory of a package we lock is found at a version the advisory lists."""

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from security.refresh_advisories import checkout_records
from tests.unit.test_lock import REPO, locked

DATABASE = REPO / "security" / "osv-db"
ADVISORIES = DATABASE / "osv-scalibr" / "PyPI" / "all.zip"
SCANNER = Path(sys.executable).parent / "osv-scanner"
# `make audit`'s own options (its paths are the repository's), so the test scans as it does.
AUDIT_OPTIONS = re.search(r"^SCAN := (.+)$", (REPO / "Makefile").read_text(), re.MULTILINE)[1].split()


def scan(*locks: Path, every_package: bool = False) -> dict[str, dict[tuple[str, str], set[str]]]:
    """lock file name → (package, version) → ids of the advisories the scanner finds, for
    the packages it finds any for (for every package it read, with ``every_package``)."""
    assert SCANNER.exists(), f"{SCANNER} is missing: `make` builds it (with Go)"
    command = [str(SCANNER), *AUDIT_OPTIONS, "--format", "json"]
    command += ["--all-packages"] if every_package else []
    for lock in locks:
        command += ["-L", f"requirements.txt:{lock}"]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode in (0, 1), f"osv-scanner failed ({done.returncode}): {done.stderr[-2000:]}"
    assert "Loaded PyPI local db" in done.stderr, done.stderr[-2000:]
    found: dict[str, dict[tuple[str, str], set[str]]] = {Path(lock).name: {} for lock in locks}
    for result in json.loads(done.stdout)["results"]:
        for package in result["packages"]:
            key = (canonicalize_name(package["package"]["name"]), package["package"]["version"])
            found[Path(result["source"]["path"]).name][key] = {v["id"] for v in package.get("vulnerabilities", [])}
    return found


def advisories() -> list[dict]:
    with zipfile.ZipFile(ADVISORIES) as archive:
        return [json.loads(archive.read(name)) for name in archive.namelist()]


def test_no_locked_version_has_a_known_vulnerability(tmp_path):
    # A copy of the development lock with Jinja2 at 2.10, beside the real ones: the same
    # scan must find it, so a clean result is not a scanner that read nothing.
    planted = tmp_path / "planted.lock"
    text, pins = re.subn(
        r"^jinja2==\S+ ", "jinja2==2.10 ", (REPO / "requirements-dev.lock").read_text(), flags=re.MULTILINE
    )
    assert pins == 1
    planted.write_text(text)
    found = scan(REPO / "requirements.lock", REPO / "requirements-dev.lock", planted)

    # PYSEC-2019-217: "Jinja2 before 2.10.1" (CVE-2019-10906, sandbox escape);
    # PYSEC-2021-66: "before 2.11.3" (CVE-2020-28493, ReDoS in urlize). The other three
    # Jinja2 advisories of the PyPA database were fixed in 2.7.2, 2.7.3 and 2.8.1. (A
    # snapshot from osv.dev's export adds GitHub's advisories of 2.10, so "at least".)
    assert list(found["planted.lock"]) == [("jinja2", "2.10")]
    reported = found["planted.lock"][("jinja2", "2.10")]
    assert {"PYSEC-2019-217", "PYSEC-2021-66"} <= reported
    assert not {"PYSEC-2014-8", "PYSEC-2014-82", "PYSEC-2019-220"} & reported
    snapshot = json.loads((DATABASE / "snapshot.json").read_text())
    for lock in ("requirements.lock", "requirements-dev.lock"):
        vulnerable = {f"{name}=={version}": sorted(ids) for (name, version), ids in found[lock].items()}
        assert not vulnerable, (
            f"{lock} pins versions with known vulnerabilities (advisories as of {snapshot['as_of']}): {vulnerable}. "
            "Move the pins (`make lock UPGRADE=--upgrade-package NAME`), or, where no release fixes it, "
            "list the advisory in security/osv-scanner.toml with the reason"
        )


def test_the_scanner_finds_every_advisory_of_a_locked_package(tmp_path):
    """Each advisory naming a package of the development lock, tried at the first version
    the advisory itself lists as affected: the scanner must report it. Computed from the
    records, not by the scanner's range matching."""
    ours = set(locked("requirements-dev.lock"))
    expected: dict[tuple[str, str], set[str]] = {}
    for advisory in advisories():
        for affected in advisory.get("affected", []):
            name = canonicalize_name(affected["package"]["name"])
            if name in ours and affected.get("versions") and not advisory.get("withdrawn"):
                expected.setdefault((name, affected["versions"][0]), set()).add(advisory["id"])
    pins = []
    for n, (name, version) in enumerate(sorted(expected)):
        pins.append(tmp_path / f"{n}.txt")
        pins[-1].write_text(f"{name}=={version}\n")

    found = scan(*pins)

    assert sum(len(ids) for ids in expected.values()) > 100  # mlflow alone has dozens
    missed = {
        f"{name}=={version}": sorted(ids - found[pin.name].get((name, version), set()))
        for pin, ((name, version), ids) in zip(pins, sorted(expected.items()), strict=True)
        if not ids <= found[pin.name].get((name, version), set())
    }
    assert not missed, f"advisories the scanner did not report: {missed}"


def test_the_snapshot_says_what_it_holds():
    snapshot = json.loads((DATABASE / "snapshot.json").read_text())
    records = advisories()
    assert snapshot["advisories"] == len(records) > 1000
    assert len({record["id"] for record in records}) == len(records)


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_the_scanner_reads_every_pin_of_a_lock(lock):
    """A pin the scanner skipped would never be audited."""
    found = scan(REPO / lock, every_package=True)
    assert set(found[lock]) == {(name, pin[0]) for name, pin in locked(lock).items()}


def test_a_checkouts_yaml_advisories_become_osv_json_unchanged(tmp_path):
    """`security/refresh_advisories.py from-checkout` reads the YAML records at HEAD; an
    unquoted time stays the RFC 3339 string OSV requires (osv-scanner silently drops a
    record whose `modified` it cannot parse), and a quoted version stays a string."""
    advisory = tmp_path / "vulns" / "demo" / "PYSEC-2099-1.yaml"
    advisory.parent.mkdir(parents=True)
    advisory.write_text(
        "id: PYSEC-2099-1\n"
        "modified: 2021-07-05T00:01:22.043149Z\n"
        "affected:\n"
        "- package: {name: demo, ecosystem: PyPI}\n"
        "  ranges: [{type: ECOSYSTEM, events: [{introduced: '0'}, {fixed: 2.7.2}]}]\n"
        '  versions: ["2.0", 2.7.1]\n'
    )
    (tmp_path / "vulns" / "demo" / "notes.txt").write_text("not an advisory")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "--quiet"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", "an advisory"], check=True)
    advisory.write_text("id: PYSEC-2099-1\nmodified: not committed\n")  # HEAD's is read, not the work tree's

    assert checkout_records(tmp_path) == {
        "PYSEC-2099-1": {
            "id": "PYSEC-2099-1",
            "modified": "2021-07-05T00:01:22.043149Z",
            "affected": [
                {
                    "package": {"name": "demo", "ecosystem": "PyPI"},
                    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.7.2"}]}],
                    "versions": ["2.0", "2.7.1"],
                }
            ],
        }
    }
