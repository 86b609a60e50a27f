import pytest

from tests.reliability.scorer_runs import Scorer


@pytest.fixture
def scorer(scorer_env, tmp_path):
    process = Scorer(scorer_env, tmp_path / "scorer.log")
    try:
        yield process
    finally:
        process.stop()
