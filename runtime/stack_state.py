"""What `rentalstream up` started, as recorded in ``<home>/stack.json``.

The embedded stack's endpoints, the pids of its servers and of the services started in
the background. `up` writes it, `down` removes it, and every other command reads it once
(through ``Settings.stack``) to find the endpoints nobody configured.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class EmbeddedKafka(BaseModel):
    version: str
    folder: Path


class EmbeddedPostgres(BaseModel):
    pgdata: Path
    system_user: str


class BackgroundService(BaseModel):
    """A service `up` started: its pid, where it answers, and its log."""

    pid: int
    url: str
    log: str


class StackState(BaseModel):
    kafka_bootstrap: str | None = None
    database_url: str | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_artifact_root: str | None = Field(None, description="Where new experiments keep their artifacts.")
    kafka: EmbeddedKafka | None = None
    postgres: EmbeddedPostgres | None = None
    pids: dict[str, int] = Field(default_factory=dict, description="The embedded servers' pids, by name.")
    services: dict[str, BackgroundService] = Field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> StackState | None:
        """The recorded state, or None when no stack is recorded under ``path``."""
        if not path.exists():
            return None
        return cls.model_validate_json(path.read_text())

    def write(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2, exclude_none=True))
