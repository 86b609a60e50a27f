"""Train the price model, compare it with a baseline and the current champion, register it.

Protocol (``PROTOCOL``): the cleaned pricing table, 5-fold ``KFold`` shuffled with seed
42, RMSE / MAE / R² per fold and their mean. Every candidate is evaluated on exactly
the same folds, and the champion alias moves only to a model that beats the current
champion's mean RMSE under the same protocol.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm
import numpy as np
import pandas as pd
import sklearn
from sklearn.base import RegressorMixin
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from runtime.compiled_trees import CompileFailed, compile_for_registration, platform_folder
from runtime.explanations import mean_absolute_contributions
from runtime.registry import Registry
from schemas.cars import EQUIPMENT, NUMERIC
from schemas.error_estimates import ERROR_MODEL_ARTIFACT
from schemas.explanations import IMPORTANCE_ARTIFACT
from schemas.features import CATEGORICAL_FEATURES, FEATURES
from schemas.intervals import INTERVAL_ARTIFACT, PriceInterval
from schemas.reference import REFERENCE_ARTIFACT
from training import error_model, intervals
from training.features import TARGET, build_features
from training.reference import reference_stats

log = logging.getLogger(__name__)

PROTOCOL = "kfold5-shuffle-seed42-v1"
FOLDS = 5
SEED = 42
IMPORTANCE_ROWS = 1_000
# The first champion's parameters: the "before" of `rentalstream experiments`.
V1_LIGHTGBM_PARAMS = {
    "n_estimators": 600,
    "learning_rate": 0.03,
    "num_leaves": 31,
    "min_child_samples": 10,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "random_state": SEED,
    "n_jobs": 2,
    "verbose": -1,
}
# The winner of `rentalstream experiments --trials 60` ("tuned", see training/experiments.py
# and docs/model.md), copied here so `rentalstream train` reproduces it without the search.
LIGHTGBM_PARAMS = {
    "objective": "huber",  # caps the pull of the few recording errors among the prices
    "alpha": 11.83683478640451,
    "n_estimators": 1787,
    "learning_rate": 0.03352958493461235,
    "num_leaves": 38,
    "min_child_samples": 2,
    "subsample": 0.8321011322075804,
    "subsample_freq": 1,
    "colsample_bytree": 0.6429312605014701,
    "reg_lambda": 0.002003918588847551,
    "cat_smooth": 1.2393217035691944,
    "min_data_per_group": 22,
    "max_cat_to_onehot": 6,
    "random_state": SEED,
    "n_jobs": 2,
    "verbose": -1,
}


@dataclass
class Evaluation:
    name: str
    rmse: list[float] = field(default_factory=list)
    mae: list[float] = field(default_factory=list)
    r2: list[float] = field(default_factory=list)
    predicted: np.ndarray | None = None  # the out-of-fold prediction of every row
    folds: list[np.ndarray] = field(default_factory=list)  # the row indices of each held-out fold

    def mean(self) -> dict[str, float]:
        return {
            "cv_rmse_mean": float(np.mean(self.rmse)),
            "cv_mae_mean": float(np.mean(self.mae)),
            "cv_r2_mean": float(np.mean(self.r2)),
        }


@dataclass
class TrainingResult:
    candidates: list[Evaluation]
    registered_version: str
    champion_version: str
    promoted: bool
    previous_champion: dict[str, float] | None
    interval: PriceInterval | None = None
    error_check: error_model.FoldCheck | None = None
    run_id: str | None = None  # the MLflow run of the registered version


def new_lightgbm() -> RegressorMixin:
    return lightgbm.LGBMRegressor(**LIGHTGBM_PARAMS)


def new_ridge_baseline() -> RegressorMixin:
    """A linear model on one-hot categories and scaled numbers: the bar to clear."""
    encode = ColumnTransformer(
        [
            ("numbers", StandardScaler(), list(NUMERIC)),
            ("categories", OneHotEncoder(handle_unknown="ignore"), list(CATEGORICAL_FEATURES)),
            ("equipment", "passthrough", list(EQUIPMENT)),
        ]
    )
    return make_pipeline(encode, Ridge(alpha=1.0))


BASELINES: dict[str, Callable[[], RegressorMixin]] = {"ridge_baseline": new_ridge_baseline}


def cross_validate(
    name: str,
    new_model: Callable[[], RegressorMixin],
    matrix: pd.DataFrame,
    target: pd.Series,
    seed: int = SEED,
    weights: np.ndarray | None = None,
) -> Evaluation:
    """The protocol's cross-validation (``seed`` other than ``SEED`` only to tune on other
    folds). ``weights``: each row's weight in fitting (a retrain's mix, ``training.retrain``);
    the held-out figures count every row once."""
    evaluation = Evaluation(name, predicted=np.zeros(len(matrix)))
    for train_idx, test_idx in KFold(FOLDS, shuffle=True, random_state=seed).split(matrix):
        model = new_model()
        fit_weights = {} if weights is None else {_weight_argument(model): weights[train_idx]}
        model.fit(matrix.iloc[train_idx], target.iloc[train_idx], **fit_weights)
        predicted = model.predict(matrix.iloc[test_idx])
        actual = target.iloc[test_idx]
        evaluation.predicted[test_idx] = predicted
        evaluation.folds.append(test_idx)
        evaluation.rmse.append(float(np.sqrt(mean_squared_error(actual, predicted))))
        evaluation.mae.append(float(mean_absolute_error(actual, predicted)))
        evaluation.r2.append(float(r2_score(actual, predicted)))
    return evaluation


def _weight_argument(model: RegressorMixin) -> str:
    """The name a model's ``fit`` takes row weights by (a pipeline routes them to its last step)."""
    return f"{model.steps[-1][0]}__sample_weight" if hasattr(model, "steps") else "sample_weight"


def train_and_register(
    pricing: pd.DataFrame,
    delay_history: Iterable[Mapping],
    *,
    tracking_uri: str,
    experiment_name: str,
    model_name: str,
    champion_alias: str = "champion",
    challenger_alias: str | None = None,
    artifact_location: str | None = None,
    compiled_trees_dir: Path | None = None,
    weights: np.ndarray | None = None,
    protocol: str = PROTOCOL,
    run_tags: Mapping[str, str] | None = None,
) -> TrainingResult:
    """Evaluate every candidate, log it to MLflow, register LightGBM, maybe promote it;
    with ``challenger_alias``, point that alias at the new version instead, whatever its
    score (the champion alias does not move).

    The LightGBM run also holds the 80% price interval (``INTERVAL_ARTIFACT``),
    calibrated on its out-of-fold predictions, with its coverage per held-out fold; and
    the reference statistics (``REFERENCE_ARTIFACT``) of the training table, the fitted
    model's prices and ``delay_history`` (rows with ``RentalEvent`` fields), which the
    drift monitor compares the live streams with; its global importance
    (``IMPORTANCE_ARTIFACT``: each feature's mean absolute contribution in euros); and its
    error estimator (``ERROR_MODEL_ARTIFACT``, ``training.error_model``), with the MAE it
    estimated for each held-out fold.

    With ``compiled_trees_dir`` (the scorer's ``model_cache_dir``), the version's trees
    are compiled there (``runtime.compiled_trees``, ~20 s of a core, skipped when that
    model is there already) and logged with it for this platform, so a scorer here
    prices with them from its first batch. A compilation that fails is logged and the
    version registered without them: the scorer then compiles them itself.

    A retrain (``training.retrain``) passes its mixed table with ``weights`` (each row's
    weight in every fit), its own ``protocol`` name (its figures are not comparable with
    the reference table's) and ``run_tags`` (what set it off)."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(experiment_name) is None:
        mlflow.create_experiment(experiment_name, artifact_location=artifact_location)
    mlflow.set_experiment(experiment_name)

    matrix = build_features(pricing)
    target = pricing[TARGET]
    with mlflow.start_run(run_name="lightgbm", tags=dict(run_tags or {})) as run:
        candidate = _cross_validate_and_log("lightgbm", new_lightgbm, matrix, target, weights, protocol)
        mlflow.log_params(LIGHTGBM_PARAMS)
        interval = intervals.calibrate(target.to_numpy(), candidate.predicted, candidate.folds)
        mlflow.log_dict(interval.model_dump(), INTERVAL_ARTIFACT)
        for fold, coverage in enumerate(interval.fold_coverage):
            mlflow.log_metric("fold_interval_coverage", coverage, step=fold)
        mlflow.log_metric("cv_interval_coverage_mean", float(np.mean(interval.fold_coverage)))
        error_check = _log_error_model(matrix, target.to_numpy(), candidate)
        fitted = new_lightgbm().fit(matrix, target, sample_weight=weights)
        reference = reference_stats(
            pricing,
            TARGET,
            fitted.predict(matrix),
            delay_history=delay_history,
            cv_mae=candidate.mean()["cv_mae_mean"],
            cv_rmse=candidate.mean()["cv_rmse_mean"],
        )
        mlflow.log_dict(reference.model_dump(), REFERENCE_ARTIFACT)
        _log_importance(fitted.booster_, matrix)
        info = mlflow.lightgbm.log_model(
            fitted,
            name="model",
            registered_model_name=model_name,
            pip_requirements=[
                f"lightgbm=={lightgbm.__version__}",
                f"pandas=={pd.__version__}",
                f"numpy=={np.__version__}",
                f"scikit-learn=={sklearn.__version__}",
            ],
        )
        if compiled_trees_dir is not None:
            _log_compiled_trees(fitted.booster_, compiled_trees_dir)
    baselines = []
    for name, new_model in BASELINES.items():
        with mlflow.start_run(run_name=name):
            baselines.append(_cross_validate_and_log(name, new_model, matrix, target, weights, protocol))
    registered = str(info.registered_model_version)

    client = MlflowClient()
    champion_run = _champion_run(client, model_name, champion_alias)
    previous = _champion_metrics(champion_run, protocol)
    if challenger_alias and Registry(tracking_uri, model_name).version_behind(champion_alias) is None:
        challenger_alias = None  # nothing to challenge: the first model becomes the champion
    # A champion retrained on recent labels as well (``training.retrain``) learned more than
    # this protocol's table: one trained on the table alone never replaces it by itself.
    retrained = champion_run is not None and champion_run[1].data.tags.get("protocol", "").startswith(f"{protocol}+")
    if retrained and not challenger_alias:
        log.warning("the champion was retrained on recent labels: not replaced; `rentalstream promote` decides")
    promote = (
        not challenger_alias
        and not retrained
        and (previous is None or candidate.mean()["cv_rmse_mean"] < previous["cv_rmse_mean"])
    )
    client.set_model_version_tag(model_name, registered, "protocol", protocol)
    if promote:
        client.set_registered_model_alias(model_name, champion_alias, registered)
    if challenger_alias:
        client.set_registered_model_alias(model_name, challenger_alias, registered)
    champion = client.get_model_version_by_alias(model_name, champion_alias).version
    return TrainingResult(
        [candidate, *baselines], registered, str(champion), promote, previous, interval, error_check, run.info.run_id
    )


def importance_rows(rows: int) -> np.ndarray:
    """The rows of the training table the global importance is measured on: up to
    ``IMPORTANCE_ROWS`` of them, drawn with the protocol's seed. TreeSHAP takes ~10 ms of a
    core per car on this model, so all 4,843 would add ~25 s to every training."""
    if rows <= IMPORTANCE_ROWS:
        return np.arange(rows)
    return np.sort(np.random.default_rng(SEED).choice(rows, size=IMPORTANCE_ROWS, replace=False))


def _log_importance(booster, matrix: pd.DataFrame) -> None:
    """The version's global importance (``IMPORTANCE_ARTIFACT``, and one metric per feature)."""
    import mlflow

    log.info("measuring the global importance")
    importance = mean_absolute_contributions(booster, matrix.iloc[importance_rows(len(matrix))])
    mlflow.log_dict(importance, IMPORTANCE_ARTIFACT)
    mlflow.log_metrics({f"importance_{feature}": euros for feature, euros in importance.items()})


def _log_error_model(matrix: pd.DataFrame, actual: np.ndarray, candidate: Evaluation) -> error_model.FoldCheck:
    """The version's error estimator (``ERROR_MODEL_ARTIFACT``), fitted on every fold's
    out-of-fold errors, and its check fold by fold (``training.error_model``)."""
    import mlflow

    log.info("training the error estimator")
    check = error_model.fold_check(matrix, actual, candidate.predicted, candidate.folds)
    for fold, estimated in enumerate(check.estimated_mae):
        mlflow.log_metric("fold_estimated_mae", estimated, step=fold)
    mlflow.log_metrics(check.metrics())
    mlflow.log_params({f"error_model_{k}": v for k, v in error_model.ERROR_MODEL_PARAMS.items()})
    estimator = error_model.fit_error_model(matrix, actual, candidate.predicted)
    mlflow.log_text(estimator.booster_.model_to_string(), ERROR_MODEL_ARTIFACT)
    return check


def _log_compiled_trees(booster, cache_dir: Path) -> None:
    import mlflow

    try:
        object_path = compile_for_registration(booster, cache_dir)
    except CompileFailed as error:
        log.warning("registering without compiled trees (the scorer will compile them): %s", error)
        return
    mlflow.log_artifact(str(object_path), artifact_path=platform_folder())


def _cross_validate_and_log(
    name: str,
    new_model: Callable[[], RegressorMixin],
    matrix: pd.DataFrame,
    target: pd.Series,
    weights: np.ndarray | None = None,
    protocol: str = PROTOCOL,
) -> Evaluation:
    """Cross-validate in the active MLflow run and log the protocol, folds and means."""
    import mlflow

    log.info("cross-validating %s", name)
    evaluation = cross_validate(name, new_model, matrix, target, weights=weights)
    mlflow.set_tag("protocol", protocol)
    mlflow.log_params({"model": name, "rows": len(matrix), "folds": FOLDS, "seed": SEED})
    mlflow.log_param("features", ",".join(FEATURES))
    for fold, (rmse, mae, r2) in enumerate(zip(evaluation.rmse, evaluation.mae, evaluation.r2)):
        mlflow.log_metrics({"fold_rmse": rmse, "fold_mae": mae, "fold_r2": r2}, step=fold)
    mlflow.log_metrics(evaluation.mean())
    mlflow.log_text(json.dumps(list(FEATURES)), "features.json")
    return evaluation


def _champion_run(client, model_name: str, alias: str):
    """The current champion's version and run, or None."""
    from mlflow.exceptions import MlflowException

    try:
        champion = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    return champion, client.get_run(champion.run_id)


def _champion_metrics(champion_run, protocol: str) -> dict[str, float] | None:
    """Mean CV metrics of the current champion (``_champion_run``), if it was evaluated on
    ``protocol``."""
    if champion_run is None:
        return None
    champion, run = champion_run
    if run.data.tags.get("protocol") != protocol:
        return None  # not comparable: any model on the current protocol replaces it (but a retrained one)
    return {"version": float(champion.version), **{k: v for k, v in run.data.metrics.items() if k.startswith("cv_")}}


def comparison_rows(result: TrainingResult) -> list[tuple[str, str, str, str]]:
    """Rows (model, RMSE, MAE, R²) of the comparison table, champion first if known."""
    rows = []
    if result.previous_champion:
        p = result.previous_champion
        rows.append(
            (
                f"current champion v{int(p['version'])}",
                f"{p['cv_rmse_mean']:.2f}",
                f"{p['cv_mae_mean']:.2f}",
                f"{p['cv_r2_mean']:.3f}",
            )
        )
    for evaluation in result.candidates:
        m = evaluation.mean()
        rows.append(
            (
                evaluation.name,
                f"{m['cv_rmse_mean']:.2f}",
                f"{m['cv_mae_mean']:.2f}",
                f"{m['cv_r2_mean']:.3f}",
            )
        )
    return rows
