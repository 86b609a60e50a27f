"""A registered version's files in the model cache, as a serving process loads them
without MLflow: ``prepare`` puts them there (in the registry's child process, see
``runtime.registry_process``), and a serving process notes which version it serves
(``remember``), so that its successor can ``recall`` it and price at once after a restart.

``prepare`` leaves the model text and, when asked, the compiled trees for this platform,
checked against the booster. Later loads find them checked (``compiled_trees.checked_before``)
and load no booster at all. Whoever noted an object checked held a booster fitted on the
contract (training, or a ``prepare`` or scorer that ran ``check_contract``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from runtime.compiled_trees import CompileFailed, check_compiled, checked_before, write_model_text, write_whole
from runtime.registry import IncompatibleModel, Registry
from schemas.cars import CATEGORICAL
from schemas.error_estimates import ERROR_MODEL_ARTIFACT
from schemas.features import CATEGORICAL_FEATURES, FEATURES
from schemas.intervals import PriceInterval

log = logging.getLogger("rentalstream.registry")


class PreparedVersion(BaseModel):
    """A version's files in the model cache, ready to load without MLflow."""

    version: str
    model_text: Path
    compiled_object: Path | None = None  # checked against the booster; None when not asked or not available
    interval: PriceInterval | None = None  # None for versions trained before intervals existed
    error_model: Path | None = None  # its error estimator's model text; None for versions trained before it existed


def check_contract(booster: Any, name: str, version: str) -> None:
    """Refuse a booster not fitted on the contract's features and category lists: the
    scorer feeds it category codes (``schemas.features.feature_codes``), which mean the
    same as training's pandas categoricals only then."""
    expected = [list(CATEGORICAL[feature]) for feature in CATEGORICAL_FEATURES]
    if tuple(booster.feature_name()) != FEATURES or booster.pandas_categorical != expected:
        raise IncompatibleModel(
            f"{name} v{version} was not fitted on schemas/features.py's features and category lists; "
            "retrain it with `rentalstream train`"
        )


def prepare(registry: Registry, version: str, cache_dir: Path, compiled: bool) -> PreparedVersion:
    """Put ``version``'s files into ``cache_dir`` (see the module): in this process, which
    imports MLflow (and, unless the compiled trees were checked before, LightGBM)."""
    interval = registry.interval(version)
    error_model = _cached_error_model(registry, version, cache_dir)
    if compiled:
        for object_path in registry.fetch_compiled_trees(version, cache_dir):
            text_path = object_path.with_suffix(".txt")
            if checked_before(text_path, object_path):
                return PreparedVersion(
                    version=version,
                    model_text=text_path,
                    compiled_object=object_path,
                    interval=interval,
                    error_model=error_model,
                )
    booster = registry.load_lightgbm(version).booster_
    check_contract(booster, registry.model_name, version)
    text_path, object_path = write_model_text(booster, cache_dir)
    checked = None
    if compiled and object_path.exists():  # logged with the version, or compiled here before
        try:
            checked = check_compiled(booster, object_path).path
        except CompileFailed as error:
            log.warning("v%s: its compiled trees are not used: %s", version, error)
    return PreparedVersion(
        version=version, model_text=text_path, compiled_object=checked, interval=interval, error_model=error_model
    )


def _cached_error_model(registry: Registry, version: str, cache_dir: Path) -> Path | None:
    """``version``'s error estimator, written into ``cache_dir`` under its digest (unless there)."""
    text = registry.artifact_text(version, ERROR_MODEL_ARTIFACT)
    if text is None:
        return None
    path = cache_dir / f"error-{hashlib.sha256(text.encode()).hexdigest()[:24]}.txt"
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_whole(path, text)
    return path


def remembered_path(cache_dir: Path, tracking_uri: str, model_name: str, alias: str) -> Path:
    """Where a serving process notes the version it last prepared for ``alias`` of this registry."""
    key = hashlib.sha256(f"{tracking_uri}\n{model_name}\n{alias}".encode()).hexdigest()[:24]
    return cache_dir / "serving" / f"{key}.json"


def remember(path: Path, prepared: PreparedVersion | None) -> None:
    """Note ``prepared`` (None: the alias points nowhere) at ``path``, whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, "null" if prepared is None else prepared.model_dump_json())


def recall(path: Path) -> tuple[bool, PreparedVersion | None]:
    """(known, the version noted at ``path``): known is False when nothing usable is noted
    (no note, or its files changed since; compiled trees must still be the checked ones)."""
    try:
        noted = json.loads(path.read_text())
    except (OSError, ValueError):
        return False, None
    if noted is None:
        return True, None
    try:
        prepared = PreparedVersion.model_validate(noted)
    except ValueError:
        return False, None
    if not prepared.model_text.exists() or (prepared.error_model is not None and not prepared.error_model.exists()):
        return False, None
    if prepared.compiled_object is not None and not checked_before(prepared.model_text, prepared.compiled_object):
        return False, None
    return True, prepared
