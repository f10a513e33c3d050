"""The ASGI application of `transfer label` (`transfer.deploy.labelling`): the page, and a small JSON
API the page calls, each action one POST that answers the new state.

- `GET /` the page; `GET /api/state` what it shows: `current` (the photo: `index`, `kind`, `reason`,
  `suggested`, `confidence`, `audit`), `classes`, `counts`, `labelled`, `left`, `estimate`,
  `refitting`, `unreadable` (`[{path, reason}]`), `can_undo`.
- `GET /api/photo/{index}` the photo's file (only the project's photos: a request names no file).
- `POST /api/label` `{"index": i, "label": name}`; `/api/accept` `{"index": i}` (the suggestion shown);
  `/api/skip` `{"index": i}`; `/api/undo`; `/api/classes` `{"name": name}`.

Errors are `{"error": "..."}` with status 400 (404 for an unknown path). Annotations are evaluated
here (FastAPI reads them).
"""

import json
import mimetypes
from importlib import resources

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from transfer.core.errors import InvalidOptionError
from transfer.deploy.label_state import Labelling

PAGE_SECURITY = ("default-src 'none'; connect-src 'self'; img-src 'self'; style-src 'unsafe-inline'; "
                 "script-src 'unsafe-inline'")


def create_app(labelling: Labelling) -> FastAPI:
    """The application labelling `labelling`."""
    app = FastAPI(title="transfer label", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.labelling = labelling
    app.exception_handler(HTTPException)(_http_error)
    app.include_router(routes)
    return app


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _http_error(request: Request, exception: HTTPException) -> JSONResponse:
    return error(exception.status_code, f"{request.method} {request.url.path}: {exception.detail}")


routes = APIRouter()


@routes.get("/", response_class=HTMLResponse)
def page(request: Request) -> HTMLResponse:
    text = resources.files("transfer.deploy").joinpath("label_page.html").read_text(encoding="utf-8")
    folder = str(request.app.state.labelling.folder)
    return HTMLResponse(text.replace("{{PROJECT}}", json.dumps(folder).replace("<", "\\u003c")),
                        headers={"Content-Security-Policy": PAGE_SECURITY, "Cache-Control": "no-store"})


@routes.get("/api/state")
def state(request: Request):
    return request.app.state.labelling.state()


@routes.get("/api/photo/{index}")
def photo(index: int, request: Request):
    labelling = request.app.state.labelling
    if not 0 <= index < len(labelling.paths):
        return error(404, f"photo {index}: there are photos 0 to {len(labelling.paths) - 1}")
    path = labelling.paths[index]
    return FileResponse(path, media_type=mimetypes.guess_type(path)[0] or "application/octet-stream",
                        headers={"Cache-Control": "no-store"})


def _act(request: Request, body: dict, action) -> JSONResponse | dict:
    labelling = request.app.state.labelling
    try:
        action(labelling, body)
    except InvalidOptionError as bad:
        return error(400, str(bad))
    return labelling.state()


async def _body(request: Request) -> dict:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {"invalid": True}


def _index(body: dict) -> int:
    index = body.get("index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise InvalidOptionError(f"expected a JSON body with the photo's \"index\" (an integer); received {body!r}.")
    return index


@routes.post("/api/label")
async def label(request: Request):
    body = await _body(request)
    return _act(request, body, lambda labelling, body: labelling.label(_index(body), str(body.get("label", ""))))


@routes.post("/api/accept")
async def accept(request: Request):
    body = await _body(request)
    return _act(request, body, lambda labelling, body: labelling.accept(_index(body)))


@routes.post("/api/skip")
async def skip(request: Request):
    body = await _body(request)
    return _act(request, body, lambda labelling, body: labelling.skip(_index(body)))


@routes.post("/api/undo")
async def undo(request: Request):
    return _act(request, {}, lambda labelling, body: labelling.undo())


@routes.post("/api/classes")
async def add_class(request: Request):
    body = await _body(request)
    return _act(request, body, lambda labelling, body: labelling.add_class(str(body.get("name", ""))))
