"""The model registry, asked through a child process, so a serving process never imports
MLflow.

Importing MLflow imports pandas, polars and pyarrow: ~190 MiB of a scorer's RSS and ~1 s of
its start, only to ask every ``poll_seconds`` which version an alias points to and, on a
promotion, to fetch that version. The scorer and the bridge ask a ``RegistryProcess``
instead. Its child (``python -m runtime.registry_process TRACKING_URI MODEL PARENT_PID``)
answers one JSON line per request and dies with its parent. After a ``prepare`` that
loaded a booster it exits, so that memory does not stay; the next request starts it again.

A registry behind an MLflow tracking server (``http(s)://``, as in compose) is asked which
version an alias points to over its REST API instead, one GET, with MLflow's own
``MLFLOW_TRACKING_TOKEN`` / ``_USERNAME`` / ``_PASSWORD`` / ``_INSECURE_TLS`` /
``_SERVER_CERT_PATH``: no child lives between promotions then.

``prepare`` leaves a version's files in the model cache for the serving process to load
(``runtime.prepared_versions``).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx

from runtime.compiled_trees import die_with
from runtime.prepared_versions import PreparedVersion, prepare
from runtime.registry import IncompatibleModel, MissingReference, NoChampion, Registry, UnknownVersion

ERRORS: dict[str, type[Exception]] = {
    error.__name__: error for error in (NoChampion, UnknownVersion, IncompatibleModel, MissingReference)
}


class RegistryUnavailable(RuntimeError):
    """The child could not answer (it exited, or MLflow failed in a way of its own)."""


class RegistryProcess:
    """The registered model ``model_name`` at ``tracking_uri``, asked through a child
    process (see the module); ``cache_dir`` is where ``prepare`` leaves a version's files."""

    def __init__(self, tracking_uri: str, model_name: str, cache_dir: Path) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.cache_dir = cache_dir
        self._child: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._rest = _rest_client(tracking_uri)

    @classmethod
    def of(cls, settings) -> RegistryProcess:
        """The registry and model of ``settings`` (``runtime.settings.Settings``)."""
        return cls(
            settings.resolved_mlflow_tracking_uri(),
            settings.registry.model_name,
            settings.scorer.model_cache_dir.expanduser(),
        )

    async def version_behind(self, alias: str) -> str | None:
        """The version ``alias`` points to, or None when the model or the alias does not exist."""
        if self._rest is not None:
            return await self._version_over_rest(alias)
        return await self._ask({"ask": "version_behind", "alias": alias})

    async def champion(self, alias: str) -> str:
        """The version ``alias`` points to; ``NoChampion`` (saying what to run) when there is none."""
        if self._rest is not None:
            version = await self._version_over_rest(alias)
            if version is None:
                raise NoChampion.of(self.model_name, alias, self.tracking_uri)
            return version
        return await self._ask({"ask": "champion", "alias": alias})

    async def _version_over_rest(self, alias: str) -> str | None:
        assert self._rest is not None
        try:
            response = await self._rest.get(
                "api/2.0/mlflow/registered-models/alias", params={"name": self.model_name, "alias": alias}
            )
        except httpx.HTTPError as error:
            raise RegistryUnavailable(f"{self.tracking_uri} did not answer: {error!r}") from error
        if response.status_code in (400, 404) and _error_code(response) in NOT_FOUND:
            return None  # no such model, or no such alias: what MlflowClient raises for both
        if response.status_code != 200:
            raise RegistryUnavailable(f"{self.tracking_uri} answered {response.status_code}: {response.text[:500]}")
        return str(response.json()["model_version"]["version"])

    async def prepare(self, version: str, compiled: bool) -> PreparedVersion:
        """``version``'s files in the cache (see ``prepare``)."""
        answer = await self._ask(
            {"ask": "prepare", "version": version, "cache_dir": str(self.cache_dir), "compiled": compiled}
        )
        if self._rest is not None:  # aliases are asked over REST: nothing to keep the child for
            async with self._lock:
                await self._stop_child()
        return PreparedVersion.model_validate(answer)

    async def artifact(self, version: str, name: str) -> dict | None:
        """A JSON artifact of ``version``'s training run (``Registry.artifact``), None if it has none."""
        return await self._ask({"ask": "artifact", "version": version, "name": name})

    async def idle(self) -> None:
        """Stop the child until the next request: a process that asks rarely (the dashboard)
        need not keep MLflow's memory in between."""
        async with self._lock:
            await self._stop_child()

    async def close(self) -> None:
        async with self._lock:
            await self._stop_child()
        if self._rest is not None:
            await self._rest.aclose()

    async def _ask(self, request: dict[str, Any]) -> Any:
        """The child's answer to ``request`` (started first if it is not running)."""
        async with self._lock:
            try:
                if self._child is None or self._child.returncode is not None:
                    self._child = await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "runtime.registry_process",
                        self.tracking_uri,
                        self.model_name,
                        str(os.getpid()),
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,  # its stderr is ours: MLflow's warnings go to our log
                    )
                assert self._child.stdin is not None and self._child.stdout is not None
                self._child.stdin.write(json.dumps(request).encode() + b"\n")
                await self._child.stdin.drain()
                line = await self._child.stdout.readline()
            except BaseException:
                await self._stop_child()  # a request half-asked cannot be answered to the next one
                raise
            if not line:
                code = await self._child.wait()
                self._child = None
                raise RegistryUnavailable(f"the registry process exited (code {code}) before answering {request}")
            answer = json.loads(line)
            if answer.get("leaving"):
                await self._stop_child()
        if "error" in answer:
            kind, message = answer["error"]["type"], answer["error"]["message"]
            raise ERRORS.get(kind, RegistryUnavailable)(message if kind in ERRORS else f"{kind}: {message}")
        return answer["result"]

    async def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is not None and child.returncode is None:
            if child.stdin is not None:
                child.stdin.close()  # it exits at the end of its input
            try:
                await asyncio.wait_for(child.wait(), 5)
            except TimeoutError:
                child.kill()
                await child.wait()


NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}  # MLflow's error codes for a missing model or alias


def _error_code(response: httpx.Response) -> str | None:
    try:
        return response.json().get("error_code")
    except ValueError:
        return None


def _rest_client(tracking_uri: str) -> httpx.AsyncClient | None:
    """A client of the tracking server at ``tracking_uri``, authenticated as MLflow's client
    would be from the same environment; None for a database or file registry."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    token, user = os.environ.get("MLFLOW_TRACKING_TOKEN"), os.environ.get("MLFLOW_TRACKING_USERNAME")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    auth = httpx.BasicAuth(user, os.environ.get("MLFLOW_TRACKING_PASSWORD", "")) if user else None
    ca_file = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    verify: bool | ssl.SSLContext = ssl.create_default_context(cafile=ca_file) if ca_file else True
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        verify = False
    return httpx.AsyncClient(
        base_url=tracking_uri.rstrip("/") + "/", headers=headers, auth=auth, verify=verify, timeout=10
    )


def answer(registry: Registry, request: dict[str, Any]) -> Any:
    """What the child answers to ``request``."""
    match request["ask"]:
        case "version_behind":
            return registry.version_behind(request["alias"])
        case "champion":
            return registry.champion(request["alias"])
        case "artifact":
            return registry.artifact(request["version"], request["name"])
        case "prepare":
            cache_dir = Path(request["cache_dir"])
            return prepare(registry, request["version"], cache_dir, request["compiled"]).model_dump(mode="json")
    raise ValueError(f"unknown request {request!r}")


def main(tracking_uri: str, model_name: str, parent: str) -> None:
    """Answer the requests on stdin, one JSON line each, until stdin ends or after a ``prepare``."""
    die_with(int(parent))
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever a library prints goes to the log, not into the replies
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    registry = Registry(tracking_uri, model_name)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply: dict[str, Any] = {"result": answer(registry, request)}
        except Exception as error:  # noqa: BLE001  (every failure is the parent's to raise)
            reply = {"error": {"type": type(error).__name__, "message": str(error)}}
        leaving = "lightgbm" in sys.modules  # a booster was loaded: leave rather than keep its memory
        replies.write(json.dumps({**reply, "leaving": leaving}) + "\n")
        if leaving:
            return


if __name__ == "__main__":
    main(*sys.argv[1:])
