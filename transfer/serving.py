"""`transfer serve`: a model behind TF Serving's REST predict API, and a page to try it on.

Routes (NAME is `--model-name`):

- `POST /v1/models/NAME:predict` (or `/v1/models/NAME/versions/1:predict`) with `{"instances": [{"b64": "<base64 image file>"}, ...]}` (TF
  Serving's row format; `{"images": {"b64": ...}}` instances and the columnar
  `{"inputs": {"images": [...]}}`, answered with `{"outputs": {...}}` as TF Serving does) returns `{"predictions": [{"labels": [...],
  "probabilities": [...], "scores": [...], "answer": "..."}, ...]}`: the outputs of the exported
  SavedModel's signature, so a client of TF Serving serving that SavedModel works here unchanged.
  `answer` is the top label, or `unknown` where its probability is below `--min-confidence`. For a
  multi-label model, `labels` are the labels whose probability reaches their threshold (the run's,
  or `--threshold`), most probable first, possibly none; `probabilities` theirs; `answer` them joined by `;`.
- `GET /v1/models/NAME` reports the model's status as TF Serving does; `GET /v1/models/NAME/metadata`
  adds the labels and the input size.
- `GET /` is a page to drop or pick images on and see their top labels; it loads nothing from
  elsewhere, so it works offline.

Errors are `{"error": "..."}` with a 4xx status: 400 for malformed JSON, a missing `b64`, bad base64,
an image that does not decode (naming its index: the whole request is refused, as TF Serving
refuses a batch with a bad instance) and too many instances; 401 for a missing or wrong API key
(checked first, compared in constant time, and saying nothing else); 404 for another model name;
413 for a body over the limit; 503 when `MAX_PENDING` requests already wait. Requests are scored one
at a time by a single worker thread, so memory stays bounded whatever the load. Nothing in a request
names a file: the server reads none.
"""

import asyncio
import base64
import binascii
import hmac
import ipaddress
import json
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from transfer import extras
from transfer.errors import BadImageError, InvalidOptionError, OutputLocationError
from transfer.imagenet import is_imagenet
from transfer.errors import require
from transfer.multilabel import check_threshold
from transfer.prediction import answer, check_min_confidence
from transfer.progress import SILENT, Reporter

DEFAULT_PORT = 8501
MAX_INSTANCES = 64
MAX_BODY_MB = 16
#: Requests waiting for the model beyond the one it scores; more get 503.
MAX_PENDING = 32
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class ServerOptions:
    """What `transfer serve` is told, checked by `check`."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    model_name: str | None = None
    api_key_file: Path | None = None
    min_confidence: float | None = None
    threshold: float | None = None
    top_k: int | None = None
    max_instances: int = MAX_INSTANCES
    max_body_mb: float = MAX_BODY_MB

    def check(self) -> None:
        """Raises InvalidOptionError for a value out of range."""
        require(1 <= self.port <= 65535, "--port", self.port, "a TCP port between 1 and 65535")
        require(self.model_name is None or NAME_PATTERN.fullmatch(self.model_name) is not None, "--model-name",
                self.model_name, "letters, digits, '.', '_' and '-' (up to 64), as in a URL path")
        check_min_confidence(self.min_confidence)
        check_threshold(self.threshold)
        require(self.top_k is None or self.top_k >= 1, "--top-k", self.top_k, "an integer >= 1")
        require(1 <= self.max_instances <= 4096, "--max-instances", self.max_instances, "an integer between 1 and 4096")
        require(0 < self.max_body_mb <= 1024, "--max-body-mb", self.max_body_mb, "a size in MB above 0, at most 1024")


def serve(model_ref: Path | str, options: ServerOptions, *, weights: str | None = None, reporter: Reporter = SILENT) -> None:
    """Serves `model_ref` (a run, an export of any format, or `imagenet:NAME`) until interrupted.

    Raises:
        InvalidOptionError: an option out of range, an unreadable or empty key file.
        DependencyMissingError: the `serve` extra is not installed.
        OutputLocationError: the address cannot be listened on (in use, not this machine's).
    """
    options.check()
    extras.require("serve")
    api_key = read_api_key(options.api_key_file)
    warning = exposure_warning(options.host, api_key)
    if warning:
        reporter.warning(warning)
    name = options.model_name or default_model_name(model_ref)
    _check_address(options.host, options.port)

    import uvicorn

    from transfer.prediction import resolve_min_confidence, resolve_top_k
    from transfer.scorers import load_scorer

    from transfer.multilabel import is_multi_label, thresholds_of

    scorer = load_scorer(model_ref, weights)
    k = resolve_top_k(options.top_k, len(scorer.labels), reporter)
    if is_multi_label(scorer.config):
        require(options.min_confidence is None, "--min-confidence", options.min_confidence,
                "given only for a single-label model (this one is multi-label: --threshold sets one threshold for all labels)")
        require(options.top_k is None, "--top-k", options.top_k, "left out for a multi-label model (it answers every label "
                "that reaches its threshold, and every label's score)")
        floor, thresholds = 0.0, thresholds_of(scorer.config, scorer.labels, options.threshold)
    else:
        require(options.threshold is None, "--threshold", options.threshold, "given only for a multi-label model")
        floor, thresholds = resolve_min_confidence(options.min_confidence, scorer.labels, scorer.config), None
    _warm_up(scorer)
    app = create_app(scorer, name, options, api_key=api_key, top_k=k, min_confidence=floor, thresholds=thresholds)
    where = f"http://{options.host if ':' not in options.host else f'[{options.host}]'}:{options.port}"
    reporter.message(f"Serving {name} at {where}/ (page) and {where}/v1/models/{name}:predict; Ctrl-C stops.")
    import signal

    from transfer.errors import Stopped

    def stopped(signum, frame):  # uvicorn shuts down gracefully, then raises the signal it caught again
        raise Stopped(f"{name} at {where} stopped (SIGTERM) after finishing the requests in flight.")

    previous = signal.signal(signal.SIGTERM, stopped)
    try:
        uvicorn.Server(uvicorn.Config(app, host=options.host, port=options.port, log_level="warning")).run()
    finally:
        signal.signal(signal.SIGTERM, previous)


def create_app(scorer, name: str, options: ServerOptions, *, api_key: str | None, top_k: int, min_confidence: float,
               thresholds: np.ndarray | None = None):
    """The ASGI application serving `scorer` (`transfer.scorers`) as model `name`; `thresholds`: a
    multi-label model's, by label."""
    # Annotations are evaluated here (no `from __future__ import annotations` in this module): FastAPI
    # reads them to know that `request` is the request.
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.exceptions import HTTPException

    app = FastAPI(title=f"transfer serve: {name}", docs_url=None, redoc_url=None, openapi_url=None)
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    labels = np.array(scorer.labels)
    max_body = int(options.max_body_mb * 1024 * 1024)
    state = {"pending": 0}

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def authorized(request: Request) -> bool:
        if api_key is None:
            return True
        given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        return hmac.compare_digest(given.encode(), api_key.encode())

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exception: HTTPException):  # unknown paths and methods, as JSON
        response = error(exception.status_code, f"{request.method} {request.url.path}: {exception.detail}; this server "
                         f"answers GET /v1/models/{name} and POST /v1/models/{name}:predict")
        response.headers.update(exception.headers or {})  # a 405 says which methods are allowed (Allow)
        return response

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        if request.url.path != "/" and not authorized(request):
            return error(401, "unauthorized: send the API key as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(
            render_page(name, key_required=api_key is not None),
            headers={"Content-Security-Policy": "default-src 'none'; connect-src 'self'; img-src 'self' data: blob:; "
                     "style-src 'unsafe-inline'; script-src 'unsafe-inline'"},
        )

    def not_found(target: str, version: str | None) -> JSONResponse | None:
        if ":" in target and target.partition(":")[0] == name:  # a method such as :predict, asked for with GET
            response = error(405, f"GET {target}: :{target.partition(':')[2]} takes POST, with the images in a JSON body")
            response.headers["Allow"] = "POST"
            return response
        if target != name:
            return error(404, f"Servable not found for request: Latest({target})")
        if version not in (None, "0", "1"):  # 0: the latest, as clients such as ovmsclient ask for it
            return error(404, f"Servable not found for request: Specific({target}, {version}); the version is 1")
        return None

    @app.get("/v1/models/{target}")
    @app.get("/v1/models/{target}/versions/{version}")
    async def status(target: str, version: str | None = None):
        return not_found(target, version) or {
            "model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]
        }

    @app.get("/v1/models/{target}/metadata")
    @app.get("/v1/models/{target}/versions/{version}/metadata")
    async def metadata(target: str, version: str | None = None):
        return not_found(target, version) or {
            "model_spec": {"name": name, "signature_name": "", "version": "1"},
            "metadata": {"signature_def": {"signature_def": {"serving_default": signature_def(len(labels), top_k, thresholds is not None)}}},
            "labels": scorer.labels, "image_size": scorer.image_size, "top_k": top_k, "min_confidence": min_confidence,
        }

    @app.post("/v1/models/{model}/versions/{target}")
    async def predict_version(model: str, target: str, request: Request):
        version, _, verb = target.partition(":")
        if version not in ("0", "1"):
            return error(404, f"Servable not found for request: Specific({model}, {version}); the version is 1")
        return await predict(f"{model}:{verb}", request)

    @app.post("/v1/models/{target}")
    async def predict(target: str, request: Request):
        model, _, verb = target.partition(":")
        if model != name or verb != "predict":
            return error(404, f"Servable not found for request: Latest({model})" if model != name else
                         f"Unknown method {verb!r}: this server answers :predict")
        if state["pending"] > MAX_PENDING:
            return error(503, f"The server is busy ({MAX_PENDING} requests waiting); retry shortly.")
        state["pending"] += 1
        try:
            try:
                body = await _read_body(request, max_body)
            except ValueError as bad:
                return error(400, str(bad))
            if body is None:
                return error(413, f"The request body is over {options.max_body_mb:g} MB (the server's --max-body-mb).")
            try:
                contents, columnar = parse_request(body, options.max_instances)
            except ValueError as bad:
                return error(400, str(bad))
            try:
                scores = await asyncio.get_running_loop().run_in_executor(worker, scorer.score_encoded, contents) if contents \
                    else np.zeros((0, len(labels)))  # no model call for nothing: not every runtime takes an empty batch
            except BadImageError as bad:
                return error(400, f"instances[{bad.index}] is not an image that can be read: {bad.reason}")
            predictions = format_predictions(scores, labels, top_k, min_confidence, thresholds)
            if columnar:  # TF Serving answers the columnar form with one list per output
                return {"outputs": {key: [p[key] for p in predictions] for key in ("labels", "probabilities", "scores", "answer")}}
            return {"predictions": predictions}
        finally:
            state["pending"] -= 1

    return app


def signature_def(classes: int, top_k: int, multi_label: bool = False) -> dict:
    """The `serving_default` signature as TF Serving's metadata describes it: the exported
    SavedModel's inputs and outputs (`transfer.export`), their dtypes and shapes (-1: the batch; a
    multi-label model's `labels` and `probabilities` have a place for every label)."""
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


def format_predictions(scores: np.ndarray, labels: np.ndarray, top_k: int, min_confidence: float,
                       thresholds: np.ndarray | None = None) -> list[dict]:
    """One prediction per row of `scores`, with the outputs of the SavedModel's signature; with a
    multi-label model's `thresholds`, `labels` are those that reach theirs (the SavedModel's, less its
    empty places)."""
    predictions = []
    if thresholds is not None:
        for row in np.asarray(scores, np.float64):
            order = [i for i in np.argsort(-row, kind="stable") if row[i] >= thresholds[i]]
            predictions.append({"labels": labels[order].tolist(), "probabilities": row[order].tolist(), "scores": row.tolist(),
                                "answer": ";".join(labels[order].tolist())})
        return predictions
    for row in np.asarray(scores, np.float64):
        order = np.argsort(-row, kind="stable")[:top_k]
        predictions.append({
            "labels": labels[order].tolist(),
            "probabilities": row[order].tolist(),
            "scores": row.tolist(),
            "answer": answer(str(labels[order[0]]), row[order[0]], min_confidence),
        })
    return predictions


def read_api_key(path: Path | None) -> str | None:
    """The key in the first line of `path`, or `None` without one.

    Raises:
        InvalidOptionError: the file cannot be read or holds no key.
    """
    if path is None:
        return None
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidOptionError(f"--api-key-file {path} cannot be read ({error.__class__.__name__}); pass a text file holding the key.") from None
    if not key or "\n" in key:
        raise InvalidOptionError(f"--api-key-file {path} must hold one key on one line; it holds {'nothing' if not key else 'several lines'}.")
    return key


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """What to tell a user who serves beyond this machine without a key."""
    if api_key is not None or _is_loopback(host):
        return None
    return (f"Listening on {host}, beyond this machine, without authentication: anyone who can reach it can use the model. "
            f"Pass --api-key-file FILE to require a key.")


def default_model_name(model_ref: Path | str) -> str:
    """The MODEL folder's name (a file's: its folder's; `imagenet:NAME`: NAME), made URL-safe."""
    if is_imagenet(model_ref):
        return str(model_ref).split(":", 1)[1]
    path = Path(model_ref).resolve()
    folder = path.parent if path.is_file() else path
    return re.sub(r"[^A-Za-z0-9._-]", "-", folder.name).strip("-.")[:64] or "model"


def render_page(name: str, key_required: bool) -> str:
    """The page, with the model's name and whether it needs a key written into it."""
    template = resources.files("transfer").joinpath("serve_page.html").read_text(encoding="utf-8")
    settings = json.dumps({"name": name, "keyRequired": key_required}).replace("<", "\\u003c")
    return template.replace("{{SETTINGS}}", settings).replace("{{NAME}}", _html_escape(name))


def _warm_up(scorer) -> None:
    """Scores one generated image, so that tracing the decoder and the model (seconds) happens before
    the server listens, not in the first client's request."""
    import io

    from PIL import Image

    image = io.BytesIO()
    Image.new("RGB", (scorer.image_size or 32,) * 2, (128, 128, 128)).save(image, format="PNG")
    scorer.score_encoded([image.getvalue()])


async def _read_body(request, limit: int) -> bytes | None:
    """The request body, gzip-decoded where `Content-Encoding: gzip` says so (as TF Serving's HTTP
    server accepts it), or `None` as soon as it is over `limit` bytes, sent or decoded.

    Raises:
        ValueError: a body that says gzip and is not.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
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


def _check_address(host: str, port: int) -> None:
    """Fails now, before the model loads, when `host:port` cannot be listened on."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
    except OSError as error:
        raise OutputLocationError(
            f"Cannot listen on {host}:{port} ({error.strerror or error}); pass another --port, or a --host of this machine."
        ) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _html_escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)
