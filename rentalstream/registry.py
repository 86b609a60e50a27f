"""The one question every component asks the MLflow registry: which version is behind an alias."""

from __future__ import annotations


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
