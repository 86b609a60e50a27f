"""A price the scorer cannot explain, on the real bridge, scorer and broker: the caller who
asked for the explanation gets a 502 naming the request, not a price without its why, and
the scorer goes on pricing. The scorer explains from its model cache's booster text, read
on the first explanation; this test's scorer has a cache of its own, whose booster text is
spoiled once the scorer prices from its compiled trees."""

import httpx
import pytest

from schemas.predict import EXAMPLE_CAR
from tests.conftest import BRIDGE_API_KEY
from tests.helpers import champion, expected_prices, wait_for

pytestmark = pytest.mark.e2e
KEY = {"X-API-Key": BRIDGE_API_KEY}


@pytest.fixture
def scorer_env(scorer_env, tmp_path):
    return {**scorer_env, "RENTALSTREAM_SCORER_MODEL_CACHE_DIR": str(tmp_path / "model-cache")}


def test_a_price_that_cannot_be_explained_is_a_502_and_the_scorer_goes_on(
    scorer_process, bridge_url, mlflow_registry, tmp_path
):
    _, model = champion(mlflow_registry)
    [want] = expected_prices(model, [EXAMPLE_CAR])
    answers = []

    def priced() -> bool:
        answers.append(httpx.post(f"{bridge_url}/predict", json=EXAMPLE_CAR, headers=KEY, timeout=10))
        return answers[-1].status_code == 200

    wait_for(priced, 90, "a first price through the bridge")
    assert answers[-1].json()["price_per_day"] == pytest.approx(want, abs=0.005)

    texts = list((tmp_path / "model-cache").glob("*.txt"))
    assert texts, sorted(p.name for p in (tmp_path / "model-cache").rglob("*"))
    for path in texts:
        path.write_text("not a LightGBM model\n")

    failed = httpx.post(f"{bridge_url}/predict", params={"explain": "true"}, json=EXAMPLE_CAR, headers=KEY, timeout=10)
    assert failed.status_code == 502, failed.text
    assert "could not explain" in failed.json()["detail"]
    assert failed.json()["request_id"] == failed.headers["X-Request-Id"]

    again = httpx.post(f"{bridge_url}/predict", json=EXAMPLE_CAR, headers=KEY, timeout=10)
    assert again.status_code == 200 and again.json()["price_per_day"] == pytest.approx(want, abs=0.005)
    assert scorer_process.poll() is None
