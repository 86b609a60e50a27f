import hashlib

import pytest

from runtime.datasets import ChecksumMismatch, Dataset, dataset_path, download


def test_missing_dataset_is_downloaded_and_verified(tmp_path):
    source = tmp_path / "source.csv"
    source.write_bytes(b"a,b\n1,2\n")
    dataset = Dataset("prices.csv", source.as_uri(), hashlib.sha256(b"a,b\n1,2\n").hexdigest())
    path = dataset_path(dataset, tmp_path / "data")
    assert path.read_bytes() == b"a,b\n1,2\n"


def test_a_download_with_the_wrong_checksum_leaves_nothing_behind(tmp_path):
    source = tmp_path / "source.csv"
    source.write_bytes(b"tampered")
    target_dir = tmp_path / "data"
    target_dir.mkdir()
    with pytest.raises(ChecksumMismatch):
        download(source.as_uri(), target_dir / "prices.csv", "0" * 64)
    assert list(target_dir.iterdir()) == []


def test_shared_copies_match_the_published_checksums(data_dir):
    from runtime.datasets import DELAYS_XLSX, PRICING_CSV, file_sha256

    for dataset in (DELAYS_XLSX, PRICING_CSV):
        assert file_sha256(data_dir / dataset.filename) == dataset.sha256
