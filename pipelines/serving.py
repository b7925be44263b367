"""``growth serve``: the registered model behind MLflow's scoring server on 127.0.0.1.

``mlflow models serve --env-manager local`` runs in this environment (nothing to build);
``POST /invocations`` with ``{"inputs": [[...features...], ...]}`` answers
``{"predictions": [[...class probabilities...], ...]}``.
"""

from __future__ import annotations

import os
import re
import shutil
import sys

from .config import NAME_PATTERN, ConfigError, PipelineError
from .tracking import client, tracking_uri

HOST = "127.0.0.1"
DEFAULT_PORT = 5001


def registered_uri(name: str, version: str = "latest") -> str:
    """``models:/<name>/<version>`` of a model registered in the tracking store (``latest``:
    its newest version); a one-line error when there is none."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise ConfigError(f"--model: {name!r} is not a model name this project registers")
    c = client()
    versions = c.search_model_versions(f"name = '{name}'")
    if not versions:
        raise PipelineError(
            f"serve: no model registered as {name!r} in {tracking_uri()} (run the pipeline first)"
        )
    numbers = sorted(int(v.version) for v in versions)
    if version == "latest":
        return f"models:/{name}/{numbers[-1]}"
    if not version.isdigit() or int(version) not in numbers:
        raise PipelineError(f"serve: model {name!r} has versions {numbers}, not {version!r}")
    return f"models:/{name}/{version}"


def serve_environment() -> dict[str, str]:
    """This environment with its scripts first on ``PATH`` (the server execs ``uvicorn``) and
    the tracking store the model is registered in."""
    scripts = os.path.dirname(sys.executable)
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri())
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
    return env


def serve_command(model_uri: str, port: int = DEFAULT_PORT) -> list[str]:
    """The scoring server's command line, bound to 127.0.0.1."""
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    return [
        mlflow, "models", "serve", "-m", model_uri, "--env-manager", "local",
        "--host", HOST, "--port", str(port),
    ]  # fmt: skip


def serve(name: str, version: str = "latest", port: int = DEFAULT_PORT) -> None:
    """Replace this process with the scoring server of ``name``'s model."""
    uri = registered_uri(name, version)
    print(f"serving {uri} on http://{HOST}:{port}/invocations", flush=True)
    command = serve_command(uri, port)
    os.execve(command[0], command, serve_environment())
