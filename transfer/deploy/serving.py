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
413 for a body over the limit; 503 when `server_routes.MAX_PENDING` requests already wait. Requests are scored one
at a time by a single worker thread, so memory stays bounded whatever the load. Nothing in a request
names a file: the server reads none. The application itself (routers, the served model as a
dependency, the request and response forms) is `transfer.deploy.routes`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from transfer.core import extras
from transfer.core.errors import InvalidOptionError, OutputLocationError, require
from transfer.models.imagenet import is_imagenet
from transfer.metrics.multilabel import check_threshold
from transfer.evaluation.prediction import check_min_confidence
from transfer.core.progress import SILENT, Reporter

DEFAULT_PORT = 8501
MAX_INSTANCES = 64
MAX_BODY_MB = 16
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
    check_address(options.host, options.port)

    import uvicorn

    from transfer.evaluation.prediction import resolve_min_confidence, resolve_top_k
    from transfer.evaluation.scorers import load_scorer
    from transfer.metrics.multilabel import is_multi_label, thresholds_of

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
    from transfer.deploy.routes import Served, create_app

    app = create_app(Served(scorer, name, top_k=k, min_confidence=floor, thresholds=thresholds, api_key=api_key,
                            max_instances=options.max_instances, max_body_mb=options.max_body_mb))
    where = f"http://{options.host if ':' not in options.host else f'[{options.host}]'}:{options.port}"
    reporter.message(f"Serving {name} at {where}/ (page) and {where}/v1/models/{name}:predict; Ctrl-C stops.")
    import signal

    from transfer.core.errors import Stopped

    def stopped(signum, frame):  # uvicorn shuts down gracefully, then raises the signal it caught again
        raise Stopped(f"{name} at {where} stopped (SIGTERM) after finishing the requests in flight.")

    previous = signal.signal(signal.SIGTERM, stopped)
    try:
        uvicorn.Server(uvicorn.Config(app, host=options.host, port=options.port, log_level="warning")).run()
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    if api_key is not None or is_loopback(host):
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


def _warm_up(scorer) -> None:
    """Scores one generated image, so that tracing the decoder and the model (seconds) happens before
    the server listens, not in the first client's request."""
    import io

    from PIL import Image

    image = io.BytesIO()
    Image.new("RGB", (scorer.image_size or 32,) * 2, (128, 128, 128)).save(image, format="PNG")
    scorer.score_encoded([image.getvalue()])


def check_address(host: str, port: int) -> None:
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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


