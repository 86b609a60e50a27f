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
        raise NoChampion(
            f"model {model_name!r} has no {alias!r} alias in {tracking_uri}; run `rentalstream train` first"
        )
    return version


class MissingReference(RuntimeError):
    pass


def version_artifact(tracking_uri: str, model_name: str, version: str, artifact: str) -> dict | None:
    """A JSON artifact logged in the training run of a model version, None if it has none."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a service log is no terminal
    mlflow.set_tracking_uri(tracking_uri)
    run_id = MlflowClient().get_model_version(model_name, version).run_id
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{artifact}")
    except (MlflowException, OSError):
        return None


def reference_of(tracking_uri: str, model_name: str, version: str):
    """The reference statistics (``schemas.reference.ReferenceStats``) logged with a
    model version at training."""
    from schemas.reference import REFERENCE_ARTIFACT, ReferenceStats

    stored = version_artifact(tracking_uri, model_name, version, REFERENCE_ARTIFACT)
    if stored is None:
        raise MissingReference(
            f"{model_name} v{version} has no {REFERENCE_ARTIFACT} (it was trained before the drift monitor "
            "existed); register a new version with `rentalstream train` and promote it"
        )
    return ReferenceStats.model_validate(stored)


def interval_of(tracking_uri: str, model_name: str, version: str):
    """The price interval (``schemas.intervals.PriceInterval``) calibrated with a model
    version at training, or None for a version trained before intervals existed (its
    prices are then served without one)."""
    from schemas.intervals import INTERVAL_ARTIFACT, PriceInterval

    stored = version_artifact(tracking_uri, model_name, version, INTERVAL_ARTIFACT)
    return None if stored is None else PriceInterval.model_validate(stored)


class UnknownVersion(ValueError):
    pass


def promote(
    tracking_uri: str, model_name: str, version: str, alias: str, challenger_alias: str
) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """Point ``alias`` at ``version``; the versions behind the aliases before and after.

    Promoting the challenger's version to champion ends the challenge: the challenger
    alias is removed, since the scorer would otherwise score every event twice with the
    same model."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    try:
        client.get_model_version(model_name, version)
    except MlflowException:
        known = sorted((int(v.version) for v in client.search_model_versions(f"name='{model_name}'")), reverse=True)
        raise UnknownVersion(
            f"{model_name} has no version {version!r} in {tracking_uri}; versions: {', '.join(map(str, known)) or 'none'}"
        ) from None
    before = {a: version_behind_alias(tracking_uri, model_name, a) for a in {alias, challenger_alias}}
    client.set_registered_model_alias(model_name, alias, version)
    if alias != challenger_alias and before[challenger_alias] == version:
        client.delete_registered_model_alias(model_name, challenger_alias)
    return before, {a: version_behind_alias(tracking_uri, model_name, a) for a in before}


def retire(tracking_uri: str, model_name: str, alias: str) -> str | None:
    """Remove ``alias``; the version it pointed to, or None when it did not exist."""
    import mlflow
    from mlflow import MlflowClient

    version = version_behind_alias(tracking_uri, model_name, alias)
    if version is not None:
        mlflow.set_tracking_uri(tracking_uri)
        MlflowClient().delete_registered_model_alias(model_name, alias)
    return version
