"""The MLflow model registry, as every component asks it: which version is behind an alias,
what a version carries (its trees, price interval, error estimator and reference
statistics), and moving an alias. One ``Registry`` per tracking URI and model, around
``MlflowClient(tracking_uri=...)``: nothing here sets MLflow's process-wide tracking URI."""

from __future__ import annotations

import json
import os
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any

# mlflow is imported in the methods: loading it costs seconds, and most commands never need it.


class NoChampion(RuntimeError):
    @classmethod
    def of(cls, model_name: str, alias: str, tracking_uri: str) -> NoChampion:
        return cls(f"model {model_name!r} has no {alias!r} alias in {tracking_uri}; run `rentalstream train` first")


class MissingReference(RuntimeError):
    pass


class UnknownVersion(ValueError):
    pass


class IncompatibleModel(RuntimeError):
    pass


class Registry:
    """The registered model ``model_name`` in the registry at ``tracking_uri``."""

    def __init__(self, tracking_uri: str, model_name: str) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name

    @classmethod
    def of(cls, settings) -> Registry:
        """The registry and model of ``settings`` (``runtime.settings.Settings``)."""
        return cls(settings.resolved_mlflow_tracking_uri(), settings.registry.model_name)

    @cached_property
    def client(self):
        from mlflow import MlflowClient

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a service log is no terminal
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def version_behind(self, alias: str) -> str | None:
        """The version ``alias`` points to, or None when the model or the alias does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException:
            return None

    def champion(self, alias: str) -> str:
        """The version ``alias`` points to; NoChampion (saying what to run) when there is none."""
        version = self.version_behind(alias)
        if version is None:
            raise NoChampion.of(self.model_name, alias, self.tracking_uri)
        return version

    def load_lightgbm(self, version: str) -> Any:
        """The fitted LightGBM model of ``version`` (MLflow's native flavour)."""
        import mlflow

        # Where the version's files are, asked of this registry: a models:/ URI would be
        # resolved against MLflow's process-wide registry URI instead.
        source = self.client.get_model_version_download_uri(self.model_name, version)
        with tempfile.TemporaryDirectory() as folder:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=folder, tracking_uri=self.tracking_uri
            )
            return mlflow.lightgbm.load_model(local)

    def artifact(self, version: str, name: str) -> dict | None:
        """A JSON artifact logged in the training run of ``version``, None if it has none.
        Raises ``UnknownVersion`` for a version that is not registered."""
        text = self.artifact_text(version, name)
        return None if text is None else json.loads(text)

    def artifact_text(self, version: str, name: str) -> str | None:
        """A text artifact logged in the training run of ``version``, None if it has none.
        Raises ``UnknownVersion`` for a version that is not registered."""
        from mlflow.exceptions import MlflowException

        try:
            run_id = self.client.get_model_version(self.model_name, version).run_id
        except MlflowException:
            raise UnknownVersion(f"{self.model_name} has no version {version!r}") from None
        with tempfile.TemporaryDirectory() as folder:
            try:
                local = self.client.download_artifacts(run_id, name, folder)
            except (MlflowException, OSError):
                return None
            return Path(local).read_text()

    def fetch_compiled_trees(self, version: str, cache_dir: Path) -> list[Path]:
        """Download the compiled trees logged with ``version`` for this platform into
        ``cache_dir`` (under the name they were logged with: their model text's digest,
        as ``runtime.compiled_trees.cache_paths`` names them), unless they are there; their
        paths in the cache. The caller checks them against the booster before pricing with them."""
        from mlflow.exceptions import MlflowException

        from runtime.compiled_trees import platform_folder

        run_id = self.client.get_model_version(self.model_name, version).run_id
        try:
            logged = [a.path for a in self.client.list_artifacts(run_id, platform_folder())]
        except (MlflowException, OSError):
            return []
        cached = []
        cache_dir.mkdir(parents=True, exist_ok=True)
        for path in logged:
            target = cache_dir / Path(path).name
            if not target.exists():
                with tempfile.TemporaryDirectory(dir=cache_dir) as folder:
                    local = self.client.download_artifacts(run_id, path, folder)
                    Path(local).replace(target)  # whole or not at all: another scorer may be reading the cache
            cached.append(target)
        return cached

    def reference(self, version: str):
        """The reference statistics (``schemas.reference.ReferenceStats``) logged with
        ``version`` at training."""
        from schemas.reference import REFERENCE_ARTIFACT, ReferenceStats

        stored = self.artifact(version, REFERENCE_ARTIFACT)
        if stored is None:
            raise MissingReference(
                f"{self.model_name} v{version} has no {REFERENCE_ARTIFACT} (it was trained before the drift "
                "monitor existed); register a new version with `rentalstream train` and promote it"
            )
        return ReferenceStats.model_validate(stored)

    def interval(self, version: str):
        """The price interval (``schemas.intervals.PriceInterval``) calibrated with
        ``version`` at training, or None for a version trained before intervals existed
        (its prices are then served without one)."""
        from schemas.intervals import INTERVAL_ARTIFACT, PriceInterval

        stored = self.artifact(version, INTERVAL_ARTIFACT)
        return None if stored is None else PriceInterval.model_validate(stored)

    def promote(
        self, version: str, alias: str, challenger_alias: str
    ) -> tuple[dict[str, str | None], dict[str, str | None]]:
        """Point ``alias`` at ``version``; the versions behind the aliases before and after.

        Promoting the challenger's version to champion ends the challenge: the challenger
        alias is removed, since the scorer would otherwise score every event twice with
        the same model."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_model_version(self.model_name, version)
        except MlflowException:
            known = sorted(
                (int(v.version) for v in self.client.search_model_versions(f"name='{self.model_name}'")),
                reverse=True,
            )
            raise UnknownVersion(
                f"{self.model_name} has no version {version!r} in {self.tracking_uri}; "
                f"versions: {', '.join(map(str, known)) or 'none'}"
            ) from None
        before = {a: self.version_behind(a) for a in {alias, challenger_alias}}
        self.client.set_registered_model_alias(self.model_name, alias, version)
        if alias != challenger_alias and before[challenger_alias] == version:
            self.client.delete_registered_model_alias(self.model_name, challenger_alias)
        return before, {a: self.version_behind(a) for a in before}

    def retire(self, alias: str) -> str | None:
        """Remove ``alias``; the version it pointed to, or None when it did not exist."""
        version = self.version_behind(alias)
        if version is not None:
            self.client.delete_registered_model_alias(self.model_name, alias)
        return version

    def log_promotion_decision(self, champion: str, challenger: str, promoted: bool, evidence: dict) -> str:
        """Record a decision of ``promote --if-better`` and its evidence: a run in the
        experiment ``<model>-promotions`` (the figures as metrics, the rest as parameters),
        and tags on the challenger's version. Returns the run's id."""
        client = self.client
        name = f"{self.model_name}-promotions"
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        decision = "promoted" if promoted else "refused"
        run = client.create_run(experiment_id, run_name=f"v{challenger} against v{champion}: {decision}")
        run_id = run.info.run_id
        client.log_param(run_id, "champion_version", champion)
        client.log_param(run_id, "challenger_version", challenger)
        client.log_param(run_id, "decision", decision)
        for key, value in evidence.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                client.log_metric(run_id, key, value)
            elif value is not None and key not in ("champion", "challenger"):
                client.log_param(run_id, key, value)
        client.set_terminated(run_id)
        client.set_model_version_tag(self.model_name, challenger, "promotion_decision", decision)
        client.set_model_version_tag(self.model_name, challenger, "promotion_run_id", run_id)
        return run_id
