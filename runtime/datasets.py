"""The two public datasets: found in the data directory, or downloaded and verified."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from tqdm import tqdm


@dataclass(frozen=True)
class Dataset:
    filename: str
    url: str
    sha256: str


DELAYS_XLSX = Dataset(
    "get_around_delay_analysis.xlsx",
    "https://full-stack-assets.s3.eu-west-3.amazonaws.com/Deployment/get_around_delay_analysis.xlsx",
    "122bf01212096777918a728401dc65a8a63489792be6bb4a3e507d4ea6f07a67",
)
PRICING_CSV = Dataset(
    "get_around_pricing_project.csv",
    "https://full-stack-assets.s3.eu-west-3.amazonaws.com/Deployment/get_around_pricing_project.csv",
    "cbc7e7e3e05837c21690ef49a1741c962ab79b1909df3c9bae883ead84f58c8f",
)


# The delay history's sheet, and its columns renamed to the event's field names.
DELAY_SHEET = "rentals_data"
DELAY_COLUMNS = {
    "rental_id": "rental_id",
    "car_id": "car_id",
    "checkin_type": "checkin_type",
    "state": "state",
    "delay_at_checkout_in_minutes": "delay_at_checkout_minutes",
    "previous_ended_rental_id": "previous_ended_rental_id",
    "time_delta_with_previous_rental_in_minutes": "planned_gap_minutes",
}


class ChecksumMismatch(RuntimeError):
    pass


def dataset_path(dataset: Dataset, data_dir: Path) -> Path:
    """Path of ``dataset`` in ``data_dir``, downloading it first when it is missing.

    A present file is trusted as is (it may be a read-only shared copy); a downloaded
    one is verified before it is moved into place, so a broken download never
    masquerades as data.
    """
    target = data_dir / dataset.filename
    if target.exists():
        return target
    data_dir.mkdir(parents=True, exist_ok=True)
    download(dataset.url, target, dataset.sha256)
    return target


def download(url: str, target: Path, sha256: str) -> None:
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as partial:
        partial_path = Path(partial.name)
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
                    while chunk := response.read(1 << 16):
                        partial.write(chunk)
                        bar.update(len(chunk))
        except BaseException:
            partial_path.unlink(missing_ok=True)
            raise
    actual = file_sha256(partial_path)
    if actual != sha256:
        partial_path.unlink(missing_ok=True)
        raise ChecksumMismatch(f"{url}: SHA-256 {actual}, expected {sha256}")
    shutil.move(partial_path, target)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_delay_history(xlsx: Path, limit: int | None = None) -> list[dict]:
    """The delay history's rows, renamed to ``RentalEvent``'s field names, in file order."""
    table = pl.read_excel(xlsx, sheet_name=DELAY_SHEET).rename(DELAY_COLUMNS).select(list(DELAY_COLUMNS.values()))
    return table.to_dicts() if limit is None else table.head(limit).to_dicts()
