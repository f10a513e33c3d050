"""The main job through the library and the CLI: train LeNet-5, predict, export, serve."""

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from typer.testing import CliRunner

from transfer.outputs import layout
from transfer.cli import app
from transfer.training.options import TrainOptions
from transfer.training.train import train

pytestmark = pytest.mark.slow

runner = CliRunner()


@pytest.fixture(scope="module")
def lenet_run(digits_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "lenet"
    options = TrainOptions(backbone="lenet", epochs=12, augment=False, batch_size=32, seed=1)
    return train(digits_dir, out, options, verbose=0)


def test_lenet_reaches_90_percent_on_generated_digits(lenet_run):
    assert lenet_run.metrics["val_accuracy"] >= 0.90
    assert lenet_run.metrics["num_train"] + lenet_run.metrics["num_val"] == 600


def test_run_directory_contents(lenet_run):
    run = lenet_run.run_dir
    for name in (layout.MODEL, layout.LABELS, layout.CONFIG, layout.HISTORY, layout.CURVES,
                 layout.SPLIT, layout.SKIPPED, layout.METRICS):
        assert (run / name).is_file(), name
    assert (run / layout.LABELS).read_text().split() == [str(d) for d in range(10)]
    history = pd.read_csv(run / layout.HISTORY)
    assert list(history.columns) == ["stage", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]
    assert history["stage"].unique().tolist() == ["scratch"] and history["epoch"].iloc[0] == 1
    metrics = json.loads((run / layout.METRICS).read_text())
    assert {"val_accuracy", "val_loss", "num_classes", "num_train", "num_val"} <= set(metrics)
    config = json.loads((run / layout.CONFIG).read_text())
    assert config["backbone"] == "lenet" and config["weights"] == "none" and config["image_size"] == 32
    assert config["finetune_lr"] is None and config["unfreeze"] is None, "no second stage: nothing of it was used"
    split = pd.read_csv(run / layout.SPLIT)
    assert set(split["split"]) == {"train", "val"}
    assert split.groupby("label")["split"].apply(lambda s: (s == "val").sum()).tolist() == [12] * 10
    assert not list(run.parent.glob(".*.partial")), "the staging folder was renamed into place"


def test_existing_run_is_not_overwritten_without_force(lenet_run, digits_dir):
    before = (lenet_run.run_dir / layout.METRICS).read_text()
    result = runner.invoke(app, ["train", str(digits_dir), "--backbone", "lenet", "--out", str(lenet_run.run_dir)])
    assert result.exit_code == 2
    assert "already exists" in result.output and "--force" in result.output
    assert (lenet_run.run_dir / layout.METRICS).read_text() == before


def predict_json(model, *paths):
    result = runner.invoke(app, ["predict", str(model), *map(str, paths), "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_predict_top3_json_from_run(lenet_run, digits_dir):
    entries = predict_json(lenet_run.run_dir, digits_dir / "3", digits_dir / "7" / "0007.png")
    assert len(entries) == 61
    for entry in entries:
        probabilities = [p["probability"] for p in entry["predictions"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert 0 <= sum(probabilities) <= 1.0001
    correct = sum(e["predictions"][0]["label"] == e["path"].split("/")[-2] for e in entries)
    assert correct >= 0.9 * len(entries)


def test_predict_csv_and_table(lenet_run, digits_dir):
    image = digits_dir / "5" / sorted(p.name for p in (digits_dir / "5").iterdir())[0]
    csv_result = runner.invoke(app, ["predict", str(lenet_run.run_dir), str(image), "--format", "csv", "--top-k", "10"])
    lines = csv_result.stdout.strip().splitlines()
    assert lines[0] == "path,rank,label,probability,answer,error,novelty,why_unknown" and len(lines) == 11  # every one of the 10 classes
    beyond = runner.invoke(app, ["predict", str(lenet_run.run_dir), str(image), "--top-k", "11", "--format", "csv"])
    assert beyond.exit_code == 0 and "--top-k 11: the model has 10 classes, so all 10 are shown." in beyond.stderr
    assert beyond.stdout.strip().splitlines() == lines, "all the classes, as with --top-k 10"
    table = runner.invoke(app, ["predict", str(lenet_run.run_dir), str(image)])
    assert table.exit_code == 0 and "#3" in table.stdout


def test_export_serves_bytes_and_agrees_with_predict_in_a_fresh_process(lenet_run, digits_dir, tmp_path):
    export_dir = tmp_path / "export"
    result = runner.invoke(app, ["export", str(lenet_run.run_dir), "--out", str(export_dir)])
    assert result.exit_code == 0, result.output
    images = sorted(str(p) for d in ("1", "4", "8") for p in (digits_dir / d).iterdir())[::7]
    from_run = {e["path"]: e["predictions"][0]["label"] for e in predict_json(lenet_run.run_dir, *images)}

    script = textwrap.dedent(
        f"""
        import json, sys, tensorflow as tf
        serve = tf.saved_model.load({str(export_dir)!r}).signatures["serving_default"]
        paths = json.loads(sys.argv[1])
        out = serve(images=tf.constant([open(p, "rb").read() for p in paths]))
        print(json.dumps({{
            "labels": [[l.decode() for l in row] for row in out["labels"].numpy()],
            "probabilities": out["probabilities"].numpy().tolist(),
            "scores_shape": list(out["scores"].shape),
            "dtypes": [out[k].dtype.name for k in ("labels", "probabilities", "scores")],
        }}))
        """
    )
    served = subprocess.run(
        [sys.executable, "-c", script, json.dumps(images)], capture_output=True, text=True, check=True,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    output = json.loads(served.stdout.strip().splitlines()[-1])
    assert output["scores_shape"] == [len(images), 10]
    assert output["dtypes"] == ["string", "float32", "float32"]
    assert all(len(row) == 3 for row in output["labels"])
    assert [row[0] for row in output["labels"]] == [from_run[p] for p in images]

    from_export = predict_json(export_dir, *images)
    assert [e["predictions"][0]["label"] for e in from_export] == [from_run[p] for p in images]


def test_export_refuses_existing_folder(lenet_run, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["export", str(lenet_run.run_dir), "--out", str(tmp_path), "--force"])
    assert result.exit_code == 2 and "not written by transfer (holding keep.txt)" in result.output
    assert (tmp_path / "keep.txt").read_text() == "mine"
