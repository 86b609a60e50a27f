"""The serving processes stay small: neither the scorer nor the bridge imports MLflow,
pandas or LightGBM (~190, ~85 and ~90 MiB of RSS) to price with compiled trees; MLflow
is asked through a child process (runtime.registry_process)."""

import subprocess
import sys

HEAVY = ("mlflow", "pandas", "polars", "pyarrow", "lightgbm", "sklearn", "lleaves")


def test_the_scorer_and_the_bridge_import_neither_mlflow_nor_pandas_nor_lightgbm():
    probe = (
        "import sys, scorer.app, producers.bridge, scorer.pricing; "
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert imported.split() == []


def test_a_scorer_explaining_imports_lightgbm_without_pandas_or_scikit_learn_and_can_import_them_later():
    probe = (
        "import sys, scorer.pricing; lightgbm = scorer.pricing.lean_lightgbm(); "
        "print(' '.join(m for m in ('lightgbm', 'pandas', 'sklearn') if m in sys.modules)); "
        "import pandas; print(pandas.__name__, lightgbm.compat.PANDAS_INSTALLED)"
    )
    printed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert printed.splitlines() == ["lightgbm", "pandas False"]
