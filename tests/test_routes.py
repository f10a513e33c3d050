"""The server's application in-process (Starlette's TestClient), each router alone: what the page and
TF Serving's model API answer for a served model whose scores the test computes itself."""

import base64
import io

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from transfer.core.errors import BadImageError
from transfer.evaluation.scorers import Scored
from transfer.deploy.routes import Served, create_app, model_api, page

LABELS = ["dark", "light"]


class BrightnessScorer:
    """Scores an image by its mean brightness m in [0, 1]: [1 - m, m]; refuses bytes that are not a PNG.
    With `unknown_threshold`, its novelty is |m - 0.5| (grey is the one thing it has seen)."""

    labels = LABELS
    image_size = 8

    def __init__(self, unknown_threshold=None):
        self.unknown_threshold = unknown_threshold

    def score_encoded(self, contents):
        rows = []
        for index, content in enumerate(contents):
            if not content.startswith(b"\x89PNG"):
                raise BadImageError(index, "not a PNG")
            mean = np.asarray(Image.open(io.BytesIO(content)).convert("L"), np.float64).mean() / 255
            rows.append([1 - mean, mean])
        rows = np.array(rows)
        return Scored(rows, None if self.unknown_threshold is None else np.abs(rows[:, 1] - 0.5))


def _png(level: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (level,) * 3).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _client(unknown_threshold=None, **served) -> TestClient:
    return TestClient(create_app(Served(BrightnessScorer(unknown_threshold), "shades", top_k=2, min_confidence=0.0, **served)))


def test_a_model_with_a_detector_answers_unknown_beyond_it_with_the_novelty_in_both_forms():
    client = _client(unknown_threshold=0.3)
    rows = client.post("/v1/models/shades:predict", json={"instances": [{"b64": _png(0)}, {"b64": _png(140)}]}).json()["predictions"]
    assert [(p["answer"], p["why_unknown"], p["labels"]) for p in rows] == [("unknown", "novel", ["dark", "light"]), ("light", "", ["light", "dark"])]
    assert [p["novelty"] for p in rows] == pytest.approx([0.5, abs(140 / 255 - 0.5)], abs=1e-9)
    columns = client.post("/v1/models/shades:predict", json={"inputs": {"images": [{"b64": _png(0)}]}}).json()["outputs"]
    assert (columns["answer"], columns["why_unknown"], columns["novelty"]) == (["unknown"], ["novel"], [pytest.approx(0.5)])
    outputs = client.get("/v1/models/shades/metadata").json()["metadata"]["signature_def"]["signature_def"]["serving_default"]["outputs"]
    assert {"novelty", "why_unknown"} <= outputs.keys()
    assert "novelty" not in _client().post("/v1/models/shades:predict", json={"instances": [{"b64": _png(0)}]}).json()["predictions"][0]


def test_predict_answers_every_instance_with_the_scorers_probabilities_ranked():
    answer = _client().post("/v1/models/shades:predict", json={"instances": [{"b64": _png(51)}, {"b64": _png(204)}]})
    assert answer.status_code == 200
    first, second = answer.json()["predictions"]
    assert first["labels"] == ["dark", "light"] and first["probabilities"] == pytest.approx([0.8, 0.2])
    assert second["answer"] == "light" and second["scores"] == pytest.approx([0.2, 0.8])


def test_a_bad_image_is_refused_with_its_index_and_reason():
    answer = _client().post("/v1/models/shades:predict", json={"instances": [{"b64": _png(0)}, {"b64": "aGVsbG8="}]})
    assert answer.status_code == 400 and answer.json() == {"error": "instances[1] is not an image that can be read: not a PNG"}


def test_the_key_is_checked_before_any_route_the_page_aside():
    client = _client(api_key="secret")
    assert client.get("/v1/models/shades").status_code == 401
    assert client.get("/no/such/path").status_code == 401
    assert client.get("/v1/models/shades", headers={"X-API-Key": "secret"}).json()["model_version_status"][0]["state"] == "AVAILABLE"
    assert client.get("/").status_code == 200


def test_each_router_works_alone_with_the_served_model_on_the_app_state():
    for router, path in ((page, "/"), (model_api, "/v1/models/shades/metadata")):
        app = FastAPI()
        app.state.served = Served(BrightnessScorer(), "shades", top_k=1, min_confidence=0.0)
        app.include_router(router)
        answer = TestClient(app).get(path)
        assert answer.status_code == 200
        if router is model_api:
            assert answer.json()["labels"] == LABELS and answer.json()["top_k"] == 1
        else:
            assert "shades" in answer.text


def test_another_model_name_or_version_is_not_found_and_a_get_of_predict_says_post():
    client = _client()
    assert client.get("/v1/models/other").status_code == 404
    assert client.get("/v1/models/shades/versions/2").status_code == 404
    answer = client.get("/v1/models/shades:predict")
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"
