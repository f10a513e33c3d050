"""The ASGI application of `transfer serve`, in FastAPI's own idiom: the model being served is one
explicit object (`Served`) on the application's state, handed to each route by a dependency
(`served`); the routes are two routers, TF Serving's model API (`model_api`) and the page
(`page`), each importable and testable alone; the API key is checked by one middleware before any
route, unknown paths included. The request and response forms are functions of their own
(`parse_request`, `format_predictions`, `signature_def`). What the routes answer is described in
`transfer.deploy.serving`.

Annotations are evaluated here (no `from __future__ import annotations`): FastAPI reads them to know
which parameter is the request and which comes from a dependency.
"""

import asyncio
import functools
import base64
import binascii
import hmac
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from transfer.core.errors import BadImageError
from transfer.evaluation.prediction import decision_rule
from transfer.evaluation.scorers import Scored

#: Requests waiting for the model beyond the one it scores; more get 503.
MAX_PENDING = 32
PAGE_SECURITY = ("default-src 'none'; connect-src 'self'; img-src 'self' data: blob:; style-src 'unsafe-inline'; "
                 "script-src 'unsafe-inline'")


@dataclass
class Served:
    """The model a server answers for, and what it answers with: everything a route needs.

    `scorer` is a `transfer.evaluation.scorers` scorer; `thresholds` a multi-label model's, by label (None for
    a single-label model, which answers `unknown` below `min_confidence`). Requests are scored one at
    a time on `worker`, so memory stays bounded; `pending` counts those waiting.
    """

    scorer: object
    name: str
    top_k: int
    min_confidence: float
    thresholds: np.ndarray | None = None
    api_key: str | None = None
    max_instances: int = 64
    max_body_mb: float = 16
    worker: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="model"))
    pending: int = 0

    @property
    def labels(self) -> np.ndarray:
        return np.array(self.scorer.labels)

    @property
    def unknown_threshold(self) -> float | None:
        """The open-set detector's threshold (`None` without one): beyond it the answer is `unknown`."""
        return getattr(self.scorer, "unknown_threshold", None)

    @functools.cached_property
    def decide(self):
        """`transfer predict`'s decision rule (`transfer.evaluation.prediction.decision_rule`) with the server's
        minimum confidence, or a multi-label model's thresholds, and the detector's threshold: built once."""
        labels = self.scorer.labels
        multi = self.thresholds is not None
        config = {"multi_label": True, "thresholds": dict(zip(labels, self.thresholds.tolist()))} if multi else {}
        return decision_rule(labels, config, min_confidence=None if multi else self.min_confidence, threshold=None,
                             novelty=self.unknown_threshold)

    @property
    def outputs(self) -> tuple[str, ...]:
        """The outputs each prediction has, as the SavedModel's signature names them."""
        return ("labels", "probabilities", "scores", "answer") + (("novelty", "why_unknown") if self.unknown_threshold is not None else ())


def served(request: Request) -> Served:
    """The dependency that hands a route the model being served."""
    return request.app.state.served


ServedModel = Annotated[Served, Depends(served)]


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(model: Served) -> FastAPI:
    """The application serving `model`: the page, TF Serving's model API, the key checked first, and
    unknown paths and methods answered as JSON."""
    app = FastAPI(title=f"transfer serve: {model.name}", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = model
    app.exception_handler(HTTPException)(http_error)
    app.middleware("http")(authenticate)
    app.include_router(page)
    app.include_router(model_api)
    return app


async def http_error(request: Request, exception: HTTPException) -> JSONResponse:
    """Unknown paths and methods, as JSON naming what this server answers."""
    name = request.app.state.served.name
    response = error(exception.status_code, f"{request.method} {request.url.path}: {exception.detail}; this server "
                     f"answers GET /v1/models/{name} and POST /v1/models/{name}:predict")
    response.headers.update(exception.headers or {})  # a 405 says which methods are allowed (Allow)
    return response


async def authenticate(request: Request, call_next):
    """Every path but the page needs the key, when there is one; checked before anything else."""
    if request.url.path != "/" and not authorized(request, request.app.state.served.api_key):
        return error(401, "unauthorized: send the API key as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
    return await call_next(request)


def authorized(request: Request, api_key: str | None) -> bool:
    """Whether the request carries `api_key` (compared in constant time); any request without a key set."""
    if api_key is None:
        return True
    given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
    return hmac.compare_digest(given.encode(), api_key.encode())


page = APIRouter()


@page.get("/", response_class=HTMLResponse)
async def show_page(model: ServedModel) -> HTMLResponse:
    return HTMLResponse(render_page(model.name, key_required=model.api_key is not None),
                        headers={"Content-Security-Policy": PAGE_SECURITY})


model_api = APIRouter()


@model_api.get("/v1/models/{target}")
@model_api.get("/v1/models/{target}/versions/{version}")
async def status(target: str, model: ServedModel, version: str | None = None):
    return not_found(model, target, version) or {
        "model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]
    }


@model_api.get("/v1/models/{target}/metadata")
@model_api.get("/v1/models/{target}/versions/{version}/metadata")
async def metadata(target: str, model: ServedModel, version: str | None = None):
    signature = signature_def(len(model.labels), model.top_k, model.thresholds is not None, model.unknown_threshold is not None)
    return not_found(model, target, version) or {
        "model_spec": {"name": model.name, "signature_name": "", "version": "1"},
        "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}},
        "labels": model.scorer.labels, "image_size": model.scorer.image_size, "top_k": model.top_k,
        "min_confidence": model.min_confidence,
    }


@model_api.post("/v1/models/{name}/versions/{target}")
async def predict_version(name: str, target: str, request: Request, model: ServedModel):
    version, _, verb = target.partition(":")
    if version not in ("0", "1"):
        return error(404, f"Servable not found for request: Specific({name}, {version}); the version is 1")
    return await predict(f"{name}:{verb}", request, model)


@model_api.post("/v1/models/{target}")
async def predict(target: str, request: Request, model: ServedModel):
    name, _, verb = target.partition(":")
    if name != model.name or verb != "predict":
        return error(404, f"Servable not found for request: Latest({name})" if name != model.name else
                     f"Unknown method {verb!r}: this server answers :predict")
    if model.pending > MAX_PENDING:
        return error(503, f"The server is busy ({MAX_PENDING} requests waiting); retry shortly.")
    model.pending += 1
    try:
        return await _answer(request, model)
    finally:
        model.pending -= 1


async def _answer(request: Request, model: Served):
    """The predictions for one request's images, or the 4xx that says what is wrong with it."""
    limit = int(model.max_body_mb * 1024 * 1024)
    try:
        body = await read_body(request, limit)
    except ValueError as bad:
        return error(400, str(bad))
    if body is None:
        return error(413, f"The request body is over {model.max_body_mb:g} MB (the server's --max-body-mb).")
    try:
        contents, columnar = parse_request(body, model.max_instances)
    except ValueError as bad:
        return error(400, str(bad))
    try:
        scores = await asyncio.get_running_loop().run_in_executor(model.worker, model.scorer.score_encoded, contents) \
            if contents else Scored(np.zeros((0, len(model.labels))), np.zeros(0))  # no model call for nothing: not every runtime takes an empty batch
    except BadImageError as bad:
        return error(400, f"instances[{bad.index}] is not an image that can be read: {bad.reason}")
    predictions = format_predictions(scores, model)
    if columnar:  # TF Serving answers the columnar form with one list per output
        return {"outputs": {key: [p[key] for p in predictions] for key in model.outputs}}
    return {"predictions": predictions}


def not_found(model: Served, target: str, version: str | None) -> JSONResponse | None:
    """The 404 (or 405) for a model name, version or method this server does not answer; None if it does."""
    if ":" in target and target.partition(":")[0] == model.name:  # a method such as :predict, asked for with GET
        response = error(405, f"GET {target}: :{target.partition(':')[2]} takes POST, with the images in a JSON body")
        response.headers["Allow"] = "POST"
        return response
    if target != model.name:
        return error(404, f"Servable not found for request: Latest({target})")
    if version not in (None, "0", "1"):  # 0: the latest, as clients such as ovmsclient ask for it
        return error(404, f"Servable not found for request: Specific({target}, {version}); the version is 1")
    return None


def signature_def(classes: int, top_k: int, multi_label: bool = False, novelty: bool = False) -> dict:
    """The `serving_default` signature as TF Serving's metadata describes it: the exported
    SavedModel's inputs and outputs (`transfer.deploy.export`), their dtypes and shapes (-1: the batch; a
    multi-label model's `labels` and `probabilities` have a place for every label; a model with an
    open-set detector also has `novelty` and `why_unknown`)."""
    top_k = classes if multi_label else top_k
    def tensor(dtype: str, *dims: int, key: str) -> dict:
        return {"dtype": dtype, "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False},
                "name": f"serving_default_{key}:0"}

    return {
        "inputs": {"images": tensor("DT_STRING", -1, key="images")},
        "outputs": {
            "labels": tensor("DT_STRING", -1, top_k, key="labels"),
            "probabilities": tensor("DT_FLOAT", -1, top_k, key="probabilities"),
            "scores": tensor("DT_FLOAT", -1, classes, key="scores"),
            "answer": tensor("DT_STRING", -1, key="answer"),
            **({"novelty": tensor("DT_FLOAT", -1, key="novelty"), "why_unknown": tensor("DT_STRING", -1, key="why_unknown")}
               if novelty else {}),
        },
        "method_name": "tensorflow/serving/predict",
    }


def parse_request(body: bytes, max_instances: int) -> tuple[list[bytes], bool]:
    """The image files of a TF Serving predict request, decoded from base64, and whether the
    request was in the columnar form (`inputs`), which is answered with `outputs`.

    Raises:
        ValueError: with the message for the client, when the request is not of that form.
    """
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as bad:
        raise ValueError(f"The body is not JSON ({bad}); send {{\"instances\": [{{\"b64\": \"...\"}}]}}.") from None
    if not isinstance(request, dict) or not ({"instances", "inputs"} & request.keys()):
        raise ValueError("The body must be a JSON object with \"instances\" (or \"inputs\"): {\"instances\": [{\"b64\": \"...\"}]}.")
    if {"instances", "inputs"} <= request.keys():
        raise ValueError("The body has both \"instances\" and \"inputs\"; send one of them (the row or the columnar form).")
    signature = request.get("signature_name", "serving_default")
    if signature != "serving_default":
        raise ValueError(f"Unknown signature_name {signature!r}: this model has serving_default only.")
    field = "instances" if "instances" in request else "inputs"
    instances = request[field]
    if isinstance(instances, dict):  # columnar: {"inputs": {"images": [...]}}
        instances = instances.get("images")
    if not isinstance(instances, list):
        raise ValueError(f"\"{field}\" must be a list of {{\"b64\": \"...\"}} objects.")
    if len(instances) > max_instances:
        raise ValueError(f"{len(instances)} instances in one request; this server takes at most {max_instances} (--max-instances).")
    contents = []
    for index, instance in enumerate(instances):
        if isinstance(instance, dict) and "images" in instance:
            instance = instance["images"]
        if not isinstance(instance, dict) or not isinstance(instance.get("b64"), str):
            raise ValueError(f"{field}[{index}] has no \"b64\" string; each instance is {{\"b64\": \"<base64 image file>\"}}.")
        try:
            contents.append(base64.b64decode(instance["b64"], validate=True))
        except (binascii.Error, ValueError):
            raise ValueError(f"{field}[{index}][\"b64\"] is not valid base64.") from None
    return contents, field == "inputs"


def format_predictions(scored: Scored, model: Served) -> list[dict]:
    """One prediction per image of `scored`, with the outputs of the SavedModel's signature
    (`Served.outputs`), decided as `transfer predict` decides (`transfer.evaluation.prediction.decision_rule`):
    a multi-label model's `labels` are those that reach their threshold (the SavedModel's, less its
    empty places); with an open-set detector, `novelty` and `why_unknown` too."""
    labels = model.scorer.labels
    predictions = []
    for row in scored.rows():
        decided = model.decide("", row, len(labels) if model.thresholds is not None else model.top_k)
        given = decided.chosen if decided.chosen is not None else decided.labels
        chosen = [labels.index(name) for name in given]
        probabilities = row.probabilities.astype(np.float64)
        prediction = {"labels": given, "probabilities": probabilities[chosen].tolist(), "scores": probabilities.tolist(),
                      "answer": decided.answer}
        if model.unknown_threshold is not None:
            prediction |= {"novelty": decided.novelty, "why_unknown": decided.why_unknown or ""}
        predictions.append(prediction)
    return predictions


def render_page(name: str, key_required: bool) -> str:
    """The page, with the model's name and whether it needs a key written into it."""
    template = resources.files("transfer.deploy").joinpath("serve_page.html").read_text(encoding="utf-8")
    settings = json.dumps({"name": name, "keyRequired": key_required}).replace("<", "\\u003c")
    return template.replace("{{SETTINGS}}", settings).replace("{{NAME}}", _html_escape(name))


async def read_body(request, limit: int) -> bytes | None:
    """The request body, gzip-decoded where `Content-Encoding: gzip` says so (as TF Serving's HTTP
    server accepts it), or `None` as soon as it is over `limit` bytes, sent or decoded.

    Raises:
        ValueError: a body that says gzip and is not.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdecimal() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    body = b"".join(chunks)
    if request.headers.get("content-encoding", "").strip().lower() != "gzip":
        return body
    import zlib

    decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        decoded = decoder.decompress(body, limit + 1)
    except zlib.error as bad:
        raise ValueError(f"The body says Content-Encoding: gzip but is not gzip ({bad}).") from None
    return None if len(decoded) > limit else decoded


def _html_escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)
