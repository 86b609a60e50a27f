"""The one question every component asks the MLflow registry: which version is behind an alias."""

from __future__ import annotations

import os


def version_behind_alias(tracking_uri: str, model_name: str, alias: str) -> str | None:
    """The version ``alias`` points to, or None when the model or the alias does not exist."""
    import mlflow  # imported here: loading mlflow costs seconds, and most commands never need it
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


class NoChampion(RuntimeError):
    pass


def champion_version(tracking_uri: str, model_name: str, alias: str) -> str:
    """The version ``alias`` points to; NoChampion (saying what to run) when there is none."""
    version = version_behind_alias(tracking_uri, model_name, alias)
    if version is None:
        raise NoChampion(f"model {model_name!r} has no {alias!r} alias in {tracking_uri}; run `rentalstream train` first")
    return version


class MissingReference(RuntimeError):
    pass


def reference_of(tracking_uri: str, model_name: str, version: str):
    """The reference statistics (``schemas.reference.ReferenceStats``) logged with a
    model version at training."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from schemas.reference import REFERENCE_ARTIFACT, ReferenceStats

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a service log is no terminal
    mlflow.set_tracking_uri(tracking_uri)
    run_id = MlflowClient().get_model_version(model_name, version).run_id
    try:
        stored = mlflow.artifacts.load_dict(f"runs:/{run_id}/{REFERENCE_ARTIFACT}")
    except (MlflowException, OSError) as error:
        raise MissingReference(
            f"{model_name} v{version} has no {REFERENCE_ARTIFACT} (it was trained before the drift monitor "
            f"existed); register a new version with `rentalstream train` and promote it: {error}"
        ) from None
    return ReferenceStats.model_validate(stored)
