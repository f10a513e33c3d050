"""`transfer label`: the labelling project's state and API (FastAPI's TestClient, the digits run's
features), its files byte for byte after each step, the audit's relabelling, and the page in a real
browser with the server killed mid-way."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from transfer.deploy import label_state
from transfer.deploy.label_routes import create_app
from transfer.deploy.labelling import LabelOptions, open_project
from transfer.metrics.acquisition import next_to_label
from transfer.outputs import publishing

PER_CLASS = 8


@pytest.fixture
def photos(digits_dir, tmp_path) -> Path:
    """8 digits of each of 0, 1 and 2, and one file that is no image."""
    folder = tmp_path / "photos"
    for digit in ("0", "1", "2"):
        (folder / digit).mkdir(parents=True)
        for path in sorted((digits_dir / digit).iterdir())[:PER_CLASS]:
            shutil.copy(path, folder / digit / path.name)
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def _truth(path: str) -> str:
    return Path(path).parent.name


def _csv(rows) -> bytes:
    return ("path,label\n" + "".join(f"{path},{label}\n" for path, label in rows)).encode()


def test_label_accept_skip_undo_and_a_new_class_are_in_the_files_at_once_and_reopen_the_same(photos, digits_run, tmp_path, monkeypatch):
    project, cache = tmp_path / "project", tmp_path / "cache"
    options = LabelOptions(model=str(digits_run), classes=("0", "1"), cache_dir=cache)
    labelling = open_project(photos, project, options)
    renamed = []
    atomic = publishing.atomic_path

    def recording(path):  # every write goes to a temporary name first, renamed onto the file
        renamed.append(Path(path).name)
        return atomic(path)

    monkeypatch.setattr(publishing, "atomic_path", recording)
    client = TestClient(create_app(labelling))
    state = client.get("/api/state").json()
    assert [(Path(u["path"]).name, u["reason"] != "") for u in state["unreadable"]] == [("broken.png", True)]
    assert state["labelled"] == 0 and state["counts"] == {"0": 0, "1": 0} and state["left"] == 3 * PER_CLASS
    assert (project / "labels.csv").read_bytes() == b"path,label\n"
    assert json.loads((project / "project.json").read_text()) == {"model": str(digits_run), "classes": ["0", "1"]}
    # The order is next_to_label's on the same features; nothing labelled: representative, no suggestion.
    picks = next_to_label(labelling.features, labelling.features[:0], np.zeros(0, int), label_state.QUEUE, classes=["0", "1"])
    assert [item["index"] for item in labelling.queue] == [p.index for p in picks]
    assert state["current"]["index"] == picks[0].index and state["current"]["suggested"] is None
    assert state["current"]["reason"].startswith("representative: ")
    assert client.get(f"/api/photo/{picks[0].index}").content == Path(labelling.paths[picks[0].index]).read_bytes()

    assert client.post("/api/classes", json={"name": "a,b"}).json()["error"].startswith("class name 'a,b'")
    assert client.post("/api/classes", json={"name": "2"}).json()["classes"] == ["0", "1", "2"]
    assert json.loads((project / "project.json").read_text())["classes"] == ["0", "1", "2"]
    assert client.post("/api/label", json={"index": 0, "label": "7"}).status_code == 400

    rows = []
    for _ in range(6):  # the true labels: two refits start in the background
        shown = client.get("/api/state").json()["current"]
        path = labelling.paths[shown["index"]]
        state = client.post("/api/label", json={"index": shown["index"], "label": _truth(path)}).json()
        rows.append((path, _truth(path)))
        assert (project / "labels.csv").read_bytes() == _csv(rows)
    assert renamed.count("labels.csv") == 1 + 6 and not list(project.glob(".tmp-*"))  # the new class, then each label
    labelling.wait()
    labelling.refit()  # the estimate and order as of the 6th label (the background refit came at the 5th)
    labelling.wait()
    state = client.get("/api/state").json()
    counts = {name: sum(label == name for _, label in rows) for name in ("0", "1", "2")}
    assert state["counts"] == counts and state["labelled"] == 6 and state["left"] == 3 * PER_CLASS - 6
    if sum(n >= 2 for n in counts.values()) >= 2:
        assert 0 <= state["estimate"]["accuracy"] <= 1 and state["estimate"]["images"] == sum(n for n in counts.values() if n >= 2)
        assert state["estimate"]["folds"] == min(5, min(n for n in counts.values() if n >= 2))
    else:
        assert state["estimate"] is None
    # Accept takes the suggestion shown; undo takes it back, byte for byte.
    shown = state["current"]
    assert shown["suggested"] in ("0", "1", "2") and 0 < shown["confidence"] <= 1
    before = (project / "labels.csv").read_bytes()
    client.post("/api/accept", json={"index": shown["index"]})
    assert (project / "labels.csv").read_bytes() == _csv(rows + [(labelling.paths[shown["index"]], shown["suggested"])])
    state = client.post("/api/undo").json()
    assert (project / "labels.csv").read_bytes() == before and state["current"]["index"] == shown["index"]
    # Skip shows another photo and writes nothing; undo brings it back.
    skipped = client.post("/api/skip", json={"index": shown["index"]}).json()
    assert skipped["current"]["index"] != shown["index"] and (project / "labels.csv").read_bytes() == before
    assert client.post("/api/undo").json()["current"]["index"] == shown["index"]
    # Reopened: the same labels, counts and classes; the labelled photos are not shown again.
    labelling.wait()
    again = TestClient(create_app(open_project(photos, project, LabelOptions(cache_dir=cache)))).get("/api/state").json()
    assert again["counts"] == counts and again["classes"] == ["0", "1", "2"] and again["labelled"] == 6
    assert again["current"]["index"] not in {i for i, p in enumerate(labelling.paths) if p in dict(rows)}
    from transfer.core.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError, match="was labelled with"):
        open_project(photos, project, LabelOptions(model="imagenet:resnet50", cache_dir=cache))
    with pytest.raises(InvalidOptionError, match="is a project already"):
        open_project(photos, project, LabelOptions(manifest=project / "labels.csv", cache_dir=cache))


def test_the_audits_doubted_labels_come_first_and_a_relabel_replaces_the_row_train_reads(photos, digits_run, tmp_path):
    from transfer.data.sources import read_manifest

    audit = tmp_path / "audit"
    audit.mkdir()
    zeros, ones = sorted((photos / "0").iterdir()), sorted((photos / "1").iterdir())
    original = [(str(p), "0") for p in zeros[:3]] + [(str(p), "1") for p in ones[:3]] + [(str(ones[3]), "0")]  # the last one wrong
    (audit / "original.csv").write_text("path,label,split\n" + "".join(f"{p},{label},train\n" for p, label in original))
    (audit / "audit.csv").write_text("path,given,suggested,kind,score,other,distance,note\n"
                                     f"{ones[3]},0,1,label_issue,0.9,,,\n{zeros[0]},0,1,label_issue,0.6,,,\n{zeros[1]},0,,outlier,0.5,,,\n")
    project = tmp_path / "project"
    labelling = open_project(photos, project, LabelOptions(model=str(digits_run), audit=audit, cache_dir=tmp_path / "cache"))
    client = TestClient(create_app(labelling))
    assert (project / "labels.csv").read_bytes() == _csv(original)  # seeded from the audit's original.csv
    first = client.get("/api/state").json()["current"]
    assert first["kind"] == "audit" and labelling.paths[first["index"]] == str(ones[3])
    assert first["audit"]["given"] == "0" and first["suggested"] == "1" and "doubted" in first["reason"]
    second = client.post("/api/accept", json={"index": first["index"]}).json()["current"]  # relabelled 1, in place
    assert (project / "labels.csv").read_bytes() == _csv(original[:-1] + [(str(ones[3]), "1")])
    assert second["kind"] == "audit" and labelling.paths[second["index"]] == str(zeros[0])
    third = client.post("/api/skip", json={"index": second["index"]}).json()["current"]  # keeps its given label
    assert third["kind"] != "audit" and (project / "labels.csv").read_bytes() == _csv(original[:-1] + [(str(ones[3]), "1")])
    assert json.loads((project / "project.json").read_text())["audit_reviewed"] == sorted([str(ones[3]), str(zeros[0])])
    reopened = open_project(photos, project, LabelOptions(audit=audit, cache_dir=tmp_path / "cache"))
    assert reopened.current()["kind"] != "audit"  # reviewed: not asked again
    listing = read_manifest(project / "labels.csv")  # what train --manifest takes
    assert list(zip(listing.files["path"], listing.files["label"])) == original[:-1] + [(str(ones[3]), "1")]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(photos: Path, project: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "transfer.cli", "label", str(photos), "--out", str(project), "--port", str(port), *extra],
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=2) as answer:
                return process, port
        except OSError:
            assert process.poll() is None, process.stdout.read().decode()
            time.sleep(0.5)
    process.kill()
    raise AssertionError("the labelling server did not start")


def _rows(project: Path) -> list[list[str]]:
    return [line.split(",") for line in (project / "labels.csv").read_text().splitlines()[1:]]


@pytest.mark.slow
@pytest.mark.browser
def test_keys_label_undo_and_accept_in_chromium_and_a_killed_server_loses_nothing(photos, digits_run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.helpers import headless_chromium

    project = tmp_path / "project"
    process, port = _start(photos, project, "--model", str(digits_run), "--classes", "0,1,2", "--cache-dir", str(tmp_path / "cache"))
    try:
        with headless_chromium("1100,900") as driver:
            driver.get(f"http://127.0.0.1:{port}/")
            ready = lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1"  # noqa: E731
            WebDriverWait(driver, 30).until(ready)
            assert "broken.png" in driver.find_element(By.ID, "unreadable").text
            body = driver.find_element(By.TAG_NAME, "body")
            for count in range(1, 7):  # the true class's key
                shown = int(driver.find_element(By.ID, "photo").get_attribute("data-index"))
                assert json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state").read())["current"]["index"] == shown
                body.send_keys(str(int(_truth(_path_of(photos, port, shown))) + 1))  # classes 0,1,2: keys 1,2,3
                WebDriverWait(driver, 30).until(lambda d: len(_rows(project)) == count and ready(d))
            assert [row[1] for row in _rows(project)] == [Path(row[0]).parent.name for row in _rows(project)]
            body.send_keys("u")
            WebDriverWait(driver, 30).until(lambda d: len(_rows(project)) == 5 and ready(d))
            WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "accept").is_enabled())
            suggested = driver.find_element(By.ID, "suggestion").text.split(" ")[0]
            body.send_keys("\ue007")  # Enter
            WebDriverWait(driver, 30).until(lambda d: len(_rows(project)) == 6 and ready(d))
            assert _rows(project)[-1][1] == suggested
            counts = driver.find_element(By.ID, "counts").text
            written = (project / "labels.csv").read_bytes()
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            assert (project / "labels.csv").read_bytes() == written and written.count(b"\n") == 7
            process, port = _start(photos, project, "--cache-dir", str(tmp_path / "cache"))
            driver.get(f"http://127.0.0.1:{port}/")
            WebDriverWait(driver, 30).until(ready)
            assert driver.find_element(By.ID, "counts").text == counts and driver.find_element(By.ID, "labelled").text == "6"
            shown = int(driver.find_element(By.ID, "photo").get_attribute("data-index"))
            assert _path_of(photos, port, shown) not in {row[0] for row in _rows(project)}
    finally:
        process.kill()
        process.wait(10)


def _path_of(photos: Path, port: int, index: int) -> str:
    """The photo the server shows as `index`: the one whose bytes it serves."""
    served = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/photo/{index}").read()
    return next(str(p) for p in sorted(photos.rglob("*.png")) if p.read_bytes() == served)
