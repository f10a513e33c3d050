"""`transfer serve` as a real process on 127.0.0.1: TF Serving's REST contract, the API key, every
bad request's 4xx, and the page in a real browser."""

import base64
import http.client
import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import headless_chromium
from transfer.cli import app
from transfer.deploy.routes import parse_request
from transfer.deploy.serving import ServerOptions, default_model_name, exposure_warning

runner = CliRunner()
KEY = "correct horse battery staple"
THRESHOLD = 0.9


# --- Without a server ----------------------------------------------------------------------------


def test_a_request_in_each_of_tf_servings_forms_gives_the_same_images():
    image = base64.b64encode(b"\xff\xd8\xff image bytes").decode()
    forms = [  # (request, columnar)
        ({"instances": [{"b64": image}]}, False),
        ({"instances": [{"images": {"b64": image}}], "signature_name": "serving_default"}, False),
        ({"inputs": {"images": [{"b64": image}]}}, True),
        ({"inputs": [{"b64": image}]}, True),
    ]
    for form, columnar in forms:
        assert parse_request(json.dumps(form).encode(), max_instances=4) == ([b"\xff\xd8\xff image bytes"], columnar)


def test_only_a_host_beyond_this_machine_without_a_key_is_warned_about():
    assert exposure_warning("127.0.0.1", None) is None and exposure_warning("::1", None) is None
    assert exposure_warning("localhost", None) is None
    assert "without authentication" in exposure_warning("0.0.0.0", None)
    assert exposure_warning("0.0.0.0", "key") is None


def test_the_model_name_defaults_to_the_folder_made_url_safe(tmp_path):
    (tmp_path / "my run (2)").mkdir()
    (tmp_path / "my run (2)" / "model.tflite").write_bytes(b"")
    assert default_model_name(tmp_path / "my run (2)") == "my-run--2"
    assert default_model_name(tmp_path / "my run (2)" / "model.tflite") == "my-run--2"
    assert default_model_name("imagenet:resnet50") == "resnet50"


# --- A server process ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Client:
    """Requests to the server under test, on 127.0.0.1 only."""

    def __init__(self, port: int, name: str):
        self.port, self.name = port, name

    def request(self, method: str, path: str, body: bytes | None = None, key: str | None = KEY, headers=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        sent = {"Content-Type": "application/json", **(headers or {})}
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        text = response.read()
        connection.close()
        return response.status, response.getheader("Content-Type", ""), text

    def predict(self, body, **kwargs):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, _, text = self.request("POST", f"/v1/models/{self.name}:predict", raw, **kwargs)
        return status, json.loads(text)


@pytest.fixture(scope="module")
def server(digits_run, tmp_path_factory):
    """`transfer serve` on the digits run, with an API key, a threshold, and small limits."""
    folder = tmp_path_factory.mktemp("serve")
    (folder / "key.txt").write_text(KEY + "\n")
    port = _free_port()
    command = [
        sys.executable, "-m", "transfer.cli", "serve", str(digits_run), "--port", str(port), "--model-name", "digits",
        "--api-key-file", str(folder / "key.txt"), "--min-confidence", str(THRESHOLD), "--max-instances", "8",
        "--max-body-mb", "1",
    ]
    log = open(folder / "server.log", "w+")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    client = Client(port, "digits")
    deadline = time.monotonic() + 120
    try:
        while True:
            assert process.poll() is None, f"the server exited: {(folder / 'server.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the server did not answer within 120 s"
            try:
                if client.request("GET", "/v1/models/digits")[0] == 200:
                    break
            except OSError:
                time.sleep(0.5)
        yield client
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def images(digits_dir) -> list[Path]:
    return [digits_dir / str(d) / sorted(p.name for p in (digits_dir / str(d)).iterdir())[d] for d in range(10)]


@pytest.mark.slow
def test_status_and_metadata_as_tf_serving_reports_them(server, digits_run):
    status, _, text = server.request("GET", "/v1/models/digits")
    assert status == 200 and json.loads(text)["model_version_status"][0]["state"] == "AVAILABLE"
    status, _, text = server.request("GET", "/v1/models/digits/metadata")
    metadata = json.loads(text)
    assert metadata["labels"] == (digits_run / "labels.txt").read_text().split() and metadata["image_size"] == 32
    assert metadata["min_confidence"] == THRESHOLD


@pytest.mark.slow
def test_a_tf_serving_client_gets_what_transfer_predict_prints(server, digits_run, images):
    """Labels, probabilities and answers over REST equal `transfer predict` on the run."""
    status, reply = server.predict({"instances": [{"b64": _b64(path)} for path in images[:8]]})
    assert status == 200
    printed = runner.invoke(app, ["predict", str(digits_run), *map(str, images[:8]), "--format", "json",
                                  "--min-confidence", str(THRESHOLD)])
    assert printed.exit_code == 0, printed.output
    for served, expected in zip(reply["predictions"], json.loads(printed.stdout), strict=True):
        assert served["labels"] == [p["label"] for p in expected["predictions"]]
        assert served["probabilities"] == pytest.approx([p["probability"] for p in expected["predictions"]], abs=1e-5)
        assert served["answer"] == expected["answer"]
        assert served["answer"] == (served["labels"][0] if served["probabilities"][0] >= THRESHOLD else "unknown")
        assert len(served["scores"]) == 10 and sum(served["scores"]) == pytest.approx(1, abs=1e-4)


@pytest.mark.slow
def test_the_versioned_route_and_the_columnar_form_answer_as_tf_serving(server, images):
    rows = {"instances": [{"b64": _b64(path)} for path in images[:2]]}
    status, expected = server.predict(rows)
    status, _, text = server.request("POST", "/v1/models/digits/versions/1:predict", json.dumps(rows).encode())
    assert status == 200 and json.loads(text) == expected
    status, columns = server.predict({"inputs": {"images": rows["instances"]}})
    assert status == 200 and columns["outputs"]["labels"] == [p["labels"] for p in expected["predictions"]]
    assert columns["outputs"]["answer"] == [p["answer"] for p in expected["predictions"]]
    status, _, text = server.request("GET", "/no/such/route")
    assert status == 404 and "POST /v1/models/digits:predict" in json.loads(text)["error"]


@pytest.mark.slow
def test_the_key_is_required_and_a_wrong_one_learns_nothing(server, images):
    body = json.dumps({"instances": [{"b64": _b64(images[0])}]}).encode()
    for key in (None, "wrong", KEY[:-1]):
        status, _, text = server.request("POST", "/v1/models/digits:predict", body, key=key)
        assert status == 401 and "predictions" not in json.loads(text)
    status, _, _ = server.request("GET", "/v1/models/nothing-here", key="wrong")
    assert status == 401, "no route is told apart without the key"
    status, _, _ = server.request("POST", "/v1/models/digits:predict", body, key=None, headers={"X-API-Key": KEY})
    assert status == 200


BAD_REQUESTS = [
    ("malformed JSON", b"{\"instances\": [", 400, "not JSON"),
    ("a list, not an object", b"[1, 2]", 400, "JSON object with \"instances\""),
    ("no b64", {"instances": [{"image": "abc"}]}, 400, "instances[0] has no \"b64\""),
    ("bad base64", {"instances": [{"b64": "not base64!"}]}, 400, "instances[0][\"b64\"] is not valid base64"),
    ("too many instances", {"instances": [{"b64": "AA=="}] * 9}, 400, "at most 8"),
    ("another signature", {"instances": [], "signature_name": "train"}, 400, "Unknown signature_name"),
]


@pytest.mark.slow
@pytest.mark.parametrize("body, status, message", [case[1:] for case in BAD_REQUESTS], ids=[case[0] for case in BAD_REQUESTS])
def test_each_bad_request_gets_its_4xx_with_a_json_error(server, body, status, message):
    answered, reply = server.predict(body)
    assert answered == status and message in reply["error"]


@pytest.mark.slow
def test_an_undecodable_image_is_named_and_refuses_the_request(server, images):
    status, reply = server.predict({"instances": [{"b64": _b64(images[0])}, {"b64": base64.b64encode(b"%PDF-1.7").decode()}]})
    assert status == 400 and reply["error"] == (
        "instances[1] is not an image that can be read: not a JPEG, PNG, GIF, BMP or WebP file (nor HEIC or AVIF)"
    )


@pytest.mark.slow
def test_an_oversized_body_and_an_unknown_model_are_refused(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.putrequest("POST", "/v1/models/digits:predict")
    connection.putheader("Authorization", f"Bearer {KEY}")
    connection.putheader("Content-Length", str(2 * 1024 * 1024))  # over --max-body-mb 1; the body is never sent
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "over 1 MB" in json.loads(response.read())["error"]
    connection.close()
    assert server.predict({"instances": []}) == (200, {"predictions": []})
    status, _, text = server.request("POST", "/v1/models/other:predict", b"{}")
    assert status == 404 and "Latest(other)" in json.loads(text)["error"]


@pytest.mark.slow
def test_concurrent_clients_all_get_answers(server, images):
    body = {"instances": [{"b64": _b64(images[3])}]}
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda _: server.predict(body), range(24)))
    assert {status for status, _ in replies} == {200}
    assert len({json.dumps(reply["predictions"][0]["labels"]) for _, reply in replies}) == 1


@pytest.mark.slow
@pytest.mark.browser
def test_the_page_classifies_a_picked_image_in_headless_chromium(server, digits_run, images, tmp_path):
    status, content_type, page = server.request("GET", "/", key=None)
    assert status == 200 and content_type.startswith("text/html")
    assert b"http://" not in page and b"https://" not in page, "nothing is fetched from elsewhere"

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with headless_chromium("1000,800") as driver:
        driver.get(f"http://127.0.0.1:{server.port}/")
        driver.find_element(By.ID, "key").send_keys(KEY)
        driver.find_element(By.ID, "files").send_keys(str(images[7]))
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".result .label"))
        answer = driver.find_element(By.CSS_SELECTOR, ".result .answer").text
        labels = [element.text for element in driver.find_elements(By.CSS_SELECTOR, ".result .label")]
        driver.save_screenshot(str(tmp_path / "page.png"))
    printed = runner.invoke(app, ["predict", str(digits_run), str(images[7]), "--format", "json", "--min-confidence", str(THRESHOLD)])
    expected = json.loads(printed.stdout)[0]
    assert labels == [p["label"] for p in expected["predictions"]] and answer == expected["answer"]
    assert (tmp_path / "page.png").stat().st_size > 5_000


def test_server_options_out_of_range_are_refused_before_anything_starts():
    from transfer.core.errors import InvalidOptionError

    for options, message in [
        (ServerOptions(port=70000), "--port"),
        (ServerOptions(model_name="a/b"), "--model-name"),
        (ServerOptions(min_confidence=1.0), "--min-confidence"),
        (ServerOptions(max_instances=0), "--max-instances"),
        (ServerOptions(max_body_mb=0), "--max-body-mb"),
    ]:
        with pytest.raises(InvalidOptionError, match=message):
            options.check()


@pytest.mark.slow
def test_openvinos_client_reads_status_metadata_and_predictions(server, images, monkeypatch):
    """ovmsclient (OpenVINO Model Server's client for TF Serving's REST API, which nobody here wrote):
    the model status of the latest and of version 1, the signature in the metadata, predictions."""
    import ovmsclient
    import requests

    send = requests.Session.request
    monkeypatch.setattr(requests.Session, "request", lambda self, method, url, **kw: send(
        self, method, url, **{**kw, "headers": {**(kw.get("headers") or {}), "Authorization": f"Bearer {KEY}"}}))
    client = ovmsclient.make_http_client(f"127.0.0.1:{server.port}")
    assert client.get_model_status(model_name="digits") == {1: {"state": "AVAILABLE", "error_code": 0, "error_message": ""}}
    assert client.get_model_status(model_name="digits", model_version=1)[1]["state"] == "AVAILABLE"
    signature = client.get_model_metadata(model_name="digits", model_version=1)["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["images"]["dtype"] == "DT_STRING"
    assert [int(d["size"]) for d in signature["outputs"]["scores"]["tensor_shape"]["dim"]] == [-1, 10]
    outputs = client.predict(inputs={"images": [p.read_bytes() for p in images[:8]]}, model_name="digits")  # --max-instances 8
    _, expected = server.predict({"instances": [{"b64": _b64(p)} for p in images[:8]]})
    assert outputs["labels"].tolist() == [p["labels"] for p in expected["predictions"]]
    import numpy as np

    np.testing.assert_allclose(outputs["scores"], [p["scores"] for p in expected["predictions"]], atol=1e-6)


@pytest.mark.slow
def test_tf_servings_rules_for_bodies_methods_and_versions(server, images):
    import gzip

    body = {"instances": [{"b64": _b64(images[0])}]}
    status, answer = server.predict({**body, "inputs": {"images": [{"b64": _b64(images[0])}]}})
    assert status == 400 and "both" in answer["error"], "TF Serving refuses a body with both forms"
    status, _, text = server.request("POST", "/v1/models/digits:predict", gzip.compress(json.dumps(body).encode()),
                                     headers={"Content-Encoding": "gzip"})
    assert status == 200 and json.loads(text)["predictions"] == server.predict(body)[1]["predictions"]
    status, _, text = server.request("POST", "/v1/models/digits:predict", b"not gzip", headers={"Content-Encoding": "gzip"})
    assert status == 400 and "not gzip" in json.loads(text)["error"]
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.request("DELETE", "/v1/models/digits", headers={"Authorization": f"Bearer {KEY}"})
    response = connection.getresponse()
    assert response.status == 405 and "GET" in response.getheader("Allow", "")
    response.read()
    connection.request("GET", "/v1/models/digits:predict", headers={"Authorization": f"Bearer {KEY}"})
    response = connection.getresponse()
    assert response.status == 405 and response.getheader("Allow") == "POST" and b"takes POST" in response.read()
    connection.close()
    for path in ("/v1/models/digits/versions/1", "/v1/models/digits/versions/1/metadata"):
        assert server.request("GET", path)[0] == 200, path
    assert server.request("GET", "/v1/models/digits/versions/2")[0] == 404
