"""``mlflow ui --app-name growth``: MLflow's own server, opening in "Model training" mode.

MLflow 3.17's UI picks GenAI or Model training from the page URL's ``workflowType`` parameter,
else from the browser's saved choice (``localStorage["mlflow.workflowType_v1"]``), else GenAI;
it does not read the experiment's ``mlflow.experimentKind`` tag for that. A browser that never
opened MLflow has no saved choice, so this app adds one line to the UI's page that saves
"machine_learning" when nothing is saved yet: the user's own later choice is kept.
Everything else is MLflow's server, unchanged (``make ui`` runs it; the entry point is
``mlflow.app`` ``growth`` in pyproject.toml).
"""

from __future__ import annotations

from mlflow.server.fastapi_app import app
from starlette.requests import Request
from starlette.responses import Response

STORAGE_KEY = "mlflow.workflowType_v1"
DEFAULT_MODE = "machine_learning"
SCRIPT = (
    f"<script>try{{if(!localStorage.getItem('{STORAGE_KEY}'))"
    f"localStorage.setItem('{STORAGE_KEY}','\"{DEFAULT_MODE}\"')}}catch(e){{}}</script>"
)


@app.middleware("http")
async def model_training_by_default(request: Request, call_next):
    response = await call_next(request)
    if request.url.path not in ("/", "/index.html") or request.method != "GET":
        return response
    if not response.headers.get("content-type", "").startswith("text/html"):
        return response
    body = b"".join([chunk async for chunk in response.body_iterator])
    body = body.replace(b"<head>", b"<head>" + SCRIPT.encode(), 1)
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    return Response(body, status_code=response.status_code, headers=headers)
