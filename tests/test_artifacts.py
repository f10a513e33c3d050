"""`transfer.outputs.artifacts`: opening runs and exports from folders written here, the errors for a wrong
path, where the files of a comparison, a cross-validation and an evaluation go and what they hold."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from transfer.outputs.artifacts import (
    Comparison, CrossValidation, Export, Run, data_folders, default_evaluation_dir, open_model, write_evaluation,
)
from transfer.core.errors import InvalidOptionError, ModelLoadError, NotAModelError


def make_run(folder: Path, *files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        (folder / name).write_bytes(b"PK")
    return folder


def message_of(error, call) -> str:
    with pytest.raises(error) as raised:
        call()
    assert type(raised.value) is error, f"expected exactly {error.__name__}, got {type(raised.value).__name__}"
    assert "\n" not in str(raised.value)
    return str(raised.value)


# Run.open


def test_run_open_reads_a_finished_run_and_a_staging_folder(tmp_path):
    finished = make_run(tmp_path / "run", "model.keras", "checkpoint.keras")
    assert Run.open(finished).model_file == finished / "model.keras", "the finished model wins over the checkpoint"
    staging = make_run(tmp_path / ".run.partial", "checkpoint.keras")
    assert Run.open(staging).model_file == staging / "checkpoint.keras"
    assert Run.open(str(finished)).path == finished, "a string path works too"


def test_run_open_of_a_missing_path_is_bad_input(tmp_path):
    missing = tmp_path / "nowhere"
    message = message_of(InvalidOptionError, lambda: Run.open(missing))
    assert message == f"{missing} does not exist; expected a run directory written by `transfer train`. Check the path."
    assert InvalidOptionError.exit_code == 2


def test_run_open_of_a_folder_without_a_model(tmp_path):
    empty = make_run(tmp_path / "empty", "labels.txt")
    message = message_of(NotAModelError, lambda: Run.open(empty))
    assert message == f"{empty} is not a run directory: {empty / 'model.keras'} is missing."
    assert NotAModelError.exit_code == 2


@pytest.mark.parametrize("name", ["model.keras", "checkpoint.keras"])
def test_a_runs_model_file_given_in_place_of_the_run_points_to_its_folder(tmp_path, name):
    run = make_run(tmp_path / "run", name)
    for opener in (Run.open, open_model):
        message = message_of(NotAModelError, lambda: opener(run / name))
        assert message.endswith(f" {name} is a run's model file: pass its folder, {run}."), message


# Export.open and open_model


@pytest.mark.parametrize("name, kind", [("saved_model.pb", "savedmodel"), ("model.tflite", "litert"), ("model.onnx", "onnx")])
def test_export_open_recognises_each_format_by_its_file(tmp_path, name, kind):
    folder = make_run(tmp_path / "export", name)
    export = Export.open(folder)
    assert (export.path, export.format) == (folder, kind)
    assert export.model_file == (folder if kind == "savedmodel" else folder / name)
    assert open_model(folder) == export


@pytest.mark.parametrize("name, kind", [("model.tflite", "litert"), ("model.onnx", "onnx")])
def test_export_open_of_the_model_file_itself(tmp_path, name, kind):
    file = make_run(tmp_path / "export", name) / name
    export = Export.open(file)
    assert (export.path, export.format, export.file, export.model_file) == (file.parent, kind, file, file)


def test_a_renamed_model_file_opens_too(tmp_path):
    """The format is the file's extension, whatever its name: a .tflite copied out of its export."""
    file = make_run(tmp_path / "phone", "mine.tflite") / "mine.tflite"
    assert Export.open(file).format == "litert"


def test_export_open_of_something_else(tmp_path):
    folder = make_run(tmp_path / "other", "notes.txt")
    message = message_of(NotAModelError, lambda: Export.open(folder))
    assert message.startswith(f"{folder} is not an export: it holds none of saved_model.pb, model.tflite, model.onnx.")
    assert "--out folder of `transfer export`" in message


def test_open_model_tells_a_run_from_an_export(tmp_path):
    run = make_run(tmp_path / "run", "model.keras")
    assert open_model(run) == Run(run)
    staging = make_run(tmp_path / "staging", "checkpoint.keras")
    assert open_model(staging) == Run(staging)
    neither = make_run(tmp_path / "neither", "labels.txt")
    message = message_of(NotAModelError, lambda: open_model(neither))
    assert message.startswith(f"{neither} is neither a run directory (with model.keras) nor an export "
                              "(with saved_model.pb, model.tflite, model.onnx).")
    missing = tmp_path / "missing"
    assert "does not exist; expected a run directory (the --out of `transfer train`) or an export" in message_of(
        InvalidOptionError, lambda: open_model(missing))


def test_export_labels_and_config(tmp_path):
    export = Export.open(make_run(tmp_path / "export", "model.tflite"))
    assert export.config() == {}
    message = message_of(ModelLoadError, export.labels)
    assert message.startswith(f"{export.path / 'labels.txt'} is missing: model.tflite needs the labels.txt")
    export.write_metadata(["cat", "dog", "1"], {"backbone": "lenet", "export": {"format": "litert"}})
    assert export.labels() == ["cat", "dog", "1"]
    assert (export.path / "labels.txt").read_text() == "cat\ndog\n1\n"
    assert export.config() == {"backbone": "lenet", "export": {"format": "litert"}}


@pytest.mark.slow  # the onnx extra's check imports tf2onnx, and TensorFlow with it (about 10 s)
def test_an_onnx_file_without_labels_reads_them_from_its_metadata(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph)
    helper.set_model_props(model, {"labels": json.dumps(["ant", "bee"])})
    (tmp_path / "export").mkdir()
    onnx.save(model, tmp_path / "export" / "model.onnx")
    assert Export.open(tmp_path / "export" / "model.onnx").labels() == ["ant", "bee"]
    helper.set_model_props(model, {})
    del model.metadata_props[:]
    onnx.save(model, tmp_path / "export" / "model.onnx")
    assert "labels.txt is missing" in message_of(ModelLoadError, Export.open(tmp_path / "export").labels)


# Where an evaluation goes


def test_default_evaluation_dir(tmp_path):
    run = make_run(tmp_path / "run", "model.keras")
    assert default_evaluation_dir(run) == run / "evaluation"
    export = make_run(tmp_path / "exports" / "phone", "model.tflite")
    assert default_evaluation_dir(export) == tmp_path / "exports" / "phone-evaluation"
    assert default_evaluation_dir(export / "model.tflite") == tmp_path / "exports" / "phone-evaluation"
    saved = make_run(tmp_path / "exports" / "server", "saved_model.pb")
    assert default_evaluation_dir(saved) == tmp_path / "exports" / "server-evaluation", "not inside the SavedModel"


def evaluation_of_hand() -> SimpleNamespace:
    """What `write_evaluation` reads of an `Evaluation`, written here: 2 classes, 4 images, 2 wrong."""
    per_class = pd.DataFrame({"precision": [0.5, 0.5], "recall": [0.5, 0.5], "f1": [0.5, 0.5], "support": [2, 2]},
                             index=pd.Index(["ants", "bees"], name="class"))
    confusion = pd.DataFrame([[1, 1], [1, 1]], index=pd.Index(["ants", "bees"], name="true"),
                             columns=pd.Index(["ants", "bees"], name="predicted"))
    errors = pd.DataFrame({"path": ["b0.png", "a1.png"], "label": ["bees", "ants"], "predicted": ["ants", "bees"],
                           "confidence": [0.9, 0.6], "top": ["ants 0.900; bees 0.100", "bees 0.600; ants 0.400"],
                           "correct": [False, False]})
    skipped = pd.DataFrame({"path": ["x.png"], "label": ["ants"], "reason": ["truncated"]})
    return SimpleNamespace(summary={"accuracy": 0.5, "images": 4}, per_class=per_class, confusion=confusion,
                           errors=errors, skipped=skipped)


def test_write_evaluation_writes_every_file_with_its_columns(tmp_path):
    out = tmp_path / "run" / "evaluation"
    write_evaluation(evaluation_of_hand(), out, lambda staging: (staging / "confusion_matrix.png").write_bytes(b"png"))
    assert sorted(p.name for p in out.iterdir()) == sorted([
        ".transfer.json", "metrics.json", "metrics.csv", "confusion_matrix.csv", "confusion_matrix.png", "errors.csv", "skipped.csv"])
    assert json.loads((out / ".transfer.json").read_text())["kind"] == "evaluation"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == {"accuracy": 0.5, "images": 4, "per_class": {
        "ants": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
        "bees": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}}}
    assert (out / "metrics.csv").read_text().splitlines() == ["class,precision,recall,f1,support", "ants,0.5,0.5,0.5,2", "bees,0.5,0.5,0.5,2"]
    assert (out / "confusion_matrix.csv").read_text().splitlines() == ["true,ants,bees", "ants,1,1", "bees,1,1"]
    errors = pd.read_csv(out / "errors.csv")
    assert list(errors.columns) == ["path", "true_label", "predicted", "confidence", "top_3"]
    assert errors["path"].tolist() == ["b0.png", "a1.png"] and errors["true_label"].tolist() == ["bees", "ants"]
    assert pd.read_csv(out / "skipped.csv").to_dict("records") == [{"path": "x.png", "label": "ants", "reason": "truncated"}]
    assert not list(tmp_path.rglob("*.partial")), "no staging folder left"


def test_write_evaluation_that_fails_to_draw_leaves_nothing(tmp_path):
    out = tmp_path / "evaluation"

    def draw(staging):
        raise RuntimeError("matplotlib broke")

    with pytest.raises(RuntimeError):
        write_evaluation(evaluation_of_hand(), out, draw)
    assert list(tmp_path.iterdir()) == []


# What a run holds


def test_a_runs_tables_and_options(tmp_path):
    run = Run(make_run(tmp_path / "run", "model.keras"))
    assert run.config() == {} and data_folders(run.path) == []
    message = message_of(ModelLoadError, run.split)
    assert message == f"{run.path} lacks split.csv; this needs a run directory written by `transfer train`."
    assert list(run.skipped().columns) == ["path", "label", "reason"] and run.skipped().empty
    assert list(run.duplicates().columns) == ["val_path", "val_label", "train_path", "train_label", "removed"]

    examples = pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "label": ["0", "1", "0"], "split": ["train", "val", "val"]})
    duplicates = pd.DataFrame({"val_path": ["c.png", "b.png"], "val_label": ["0", "1"], "train_path": ["a.png", "a.png"],
                               "train_label": ["0", "0"], "removed": [True, False]})
    skipped = pd.DataFrame({"path": ["d.txt"], "label": ["1"], "reason": ["not an image file"]})
    run.write_data(SimpleNamespace(class_names=["0", "1"], examples=examples, multi_label=False, skipped=skipped, duplicates=duplicates))
    assert run.labels() == ["0", "1"], "class names that look like numbers stay text"
    assert run.split().to_dict("records") == examples.to_dict("records")
    assert run.validation_images().to_dict("records") == [{"path": "b.png", "label": "1"}, {"path": "c.png", "label": "0"}]
    assert run.duplicates()["removed"].tolist() == [True, False]
    assert run.skipped().to_dict("records") == skipped.to_dict("records")
    (run.path / "config.json").write_text(json.dumps({"data_folders": ["/data/a", "/data/b"]}))
    assert data_folders(run.path) == ["/data/a", "/data/b"]


def test_a_multi_label_runs_split_keeps_its_label_sets(tmp_path):
    run = Run(make_run(tmp_path / "run", "model.keras"))
    examples = pd.DataFrame({"path": ["a.png", "b.png"], "label": ["cat;dog", ""], "split": ["train", "val"]})
    run.write_data(SimpleNamespace(class_names=["cat", "dog"], examples=examples, multi_label=True,
                                   skipped=pd.DataFrame(columns=["path", "label", "reason"]),
                                   duplicates=pd.DataFrame(columns=["val_path", "val_label", "train_path", "train_label", "removed"])))
    assert (run.path / "split.csv").read_text().splitlines()[0] == "path,labels,split", "a manifest train --manifest reads back"
    assert run.split()["label"].tolist() == ["cat;dog", ""]


def test_write_results_and_stage_history(tmp_path):
    run = Run(make_run(tmp_path / "run"))
    saved = []
    model = SimpleNamespace(save=lambda path: (saved.append(path), Path(path).write_bytes(b"PK")))
    history = pd.DataFrame({"stage": ["frozen"], "epoch": [1], "loss": [0.5]})
    run.write_results(model, metrics={"val_accuracy": 0.75}, config={"backbone": "lenet"}, history=history)
    assert saved == [run.path / "model.keras"]
    assert json.loads((run.path / "metrics.json").read_text()) == {"val_accuracy": 0.75}
    assert run.config() == {"backbone": "lenet"}
    assert (run.path / "history.csv").read_text().splitlines() == ["stage,epoch,loss", "frozen,1,0.5"]

    assert run.stage_history("finetune").empty and list(run.stage_history("finetune").columns)[:2] == ["stage", "epoch"]
    log = run.stage_dir("frozen") / "history.csv"
    log.parent.mkdir(parents=True)
    log.write_text("epoch,accuracy,learning_rate,loss,val_accuracy,val_loss\n0,0.5,0.01,1.0,0.4,1.1\n1,0.6,0.01,0.9,0.5,1.0\n"
                   "1,0.65,0.01,0.85,0.55,0.95\n")  # epoch 1 run again after a restart
    frame = run.stage_history("frozen")
    assert list(frame.columns) == ["stage", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]
    assert frame.to_dict("records") == [
        {"stage": "frozen", "epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4, "learning_rate": 0.01},
        {"stage": "frozen", "epoch": 2, "loss": 0.85, "accuracy": 0.65, "val_loss": 0.95, "val_accuracy": 0.55, "learning_rate": 0.01},
    ]


def test_drop_resume_state_keeps_only_what_is_published(tmp_path):
    run = Run(make_run(tmp_path / "run", "model.keras", "checkpoint.keras", "labels.txt", "resume.json", "best_weights.npz"))
    (run.stage_dir("frozen") / "backup").mkdir(parents=True)
    (run.stage_dir("frozen") / "backup" / "epoch.keras").write_bytes(b"x")
    assert run.resume_file == run.path / "resume.json" and run.best_weights_file == run.path / "best_weights.npz"
    run.drop_resume_state()
    assert sorted(p.name for p in run.path.iterdir()) == ["labels.txt", "model.keras"]
    run.drop_resume_state()  # again: nothing left to drop, no error


def test_layer_names_read_from_the_model_description(tmp_path):
    def layer(kind, name, *inner, name_in_config=False):
        entry = {"class_name": kind, "config": {"layers": list(inner)} if inner else {}}
        if name_in_config:
            entry["config"]["name"] = name
        else:
            entry["name"] = name
        return entry

    backbone = layer("Functional", "backbone", layer("InputLayer", "in"), layer("Conv2D", "c1"),
                     layer("Functional", "block", layer("Dense", "d1", name_in_config=True)), layer("Flatten", "flat"))
    config = {"class_name": "Functional", "config": {"layers": [layer("InputLayer", "image"), backbone, layer("Dense", "head")]}}
    run = make_run(tmp_path / "run")
    with zipfile.ZipFile(run / "model.keras", "w") as archive:
        archive.writestr("config.json", json.dumps(config))
    assert Run(run).layer_names("backbone") == ["c1", "block", "d1", "flat"]
    assert Run(run).layer_names("head") == []
    assert Run(run).layer_names("nothing") == []
    (run / "model.keras").write_bytes(b"not a zip")
    assert Run(run).layer_names("backbone") == []


@pytest.mark.slow  # trains the session's LeNet run (about 40 s here) unless another test did
def test_a_real_run_opens_with_its_labels_split_and_layers(digits_run):
    import keras

    import transfer.models.heads  # noqa: F401  (registers the run's layers)
    import transfer.data.preprocessing  # noqa: F401

    run = Run.open(digits_run)
    assert run.labels() == [str(d) for d in range(10)]
    split = run.split()
    assert len(split) == 600 and set(split["split"]) == {"train", "val"}
    assert len(run.validation_images()) == (split["split"] == "val").sum() > 0
    model = keras.saving.load_model(digits_run / "model.keras", compile=False)
    expected = [layer.name for layer in model.get_layer("lenet").layers if not isinstance(layer, keras.layers.InputLayer)]
    assert run.layer_names("lenet") == expected and "c1" in expected
    assert default_evaluation_dir(digits_run) == digits_run / "evaluation"


# A comparison and a cross-validation


def test_comparison_paths_and_files(tmp_path):
    comparison = Comparison(tmp_path / ".cmp.partial")
    assert comparison.split_file == comparison.path / "split.csv"
    assert comparison.run_dir("resnet50") == comparison.path / "runs" / "resnet50"
    for name in ("lenet", "alexnet"):
        make_run(comparison.run_dir(name))
        (comparison.run_dir(name) / "config.json").write_text(json.dumps({"backbone": name, "manifest": "/staging/split.csv"}))
    comparison.relocate_runs(tmp_path / "cmp")
    for name in ("lenet", "alexnet"):
        config = json.loads((comparison.run_dir(name) / "config.json").read_text())
        assert config == {"backbone": name, "manifest": str(tmp_path / "cmp" / "split.csv")}
    leaderboard = pd.DataFrame({"backbone": ["lenet", "alexnet"], "val_accuracy": [0.9, 0.8]})
    comparison.write_leaderboard(leaderboard, {"epochs": 2})
    assert json.loads((comparison.path / "config.json").read_text()) == {"epochs": 2}
    assert (comparison.path / "leaderboard.csv").read_text().splitlines() == ["backbone,val_accuracy", "lenet,0.9", "alexnet,0.8"]
    examples = pd.DataFrame({"path": ["a.png"], "label": ["x"], "split": ["train"]})
    comparison.write_data(SimpleNamespace(examples=examples, multi_label=False, skipped=pd.DataFrame(columns=["path", "label", "reason"])))
    assert (comparison.split_file.read_text().splitlines()) == ["path,label,split", "a.png,x,train"]
    assert (comparison.path / "skipped.csv").read_text().strip() == "path,label,reason"


def test_cross_validation_paths_and_files(tmp_path):
    cv = CrossValidation(tmp_path / ".cv.partial")
    assert cv.folds_file == cv.path / "folds.csv"
    assert cv.fold_dir(3) == cv.path / "fold-3"
    assert cv.manifest(3) == cv.path / "fold-3" / "train.csv"
    assert cv.run_dir(2, "lenet") == cv.path / "fold-2" / "lenet"
    for fold in (1, 2):
        make_run(cv.run_dir(fold, "lenet"))
        (cv.run_dir(fold, "lenet") / "config.json").write_text(json.dumps({"manifest": "old", "data": "old", "seed": fold}))
    final = tmp_path / "cv"
    cv.relocate_runs(final)
    for fold in (1, 2):
        config = json.loads((cv.run_dir(fold, "lenet") / "config.json").read_text())
        expected = str(final.resolve() / f"fold-{fold}" / "train.csv")
        assert config == {"manifest": expected, "data": expected, "seed": fold}
    cv.write_results(pd.DataFrame({"backbone": ["lenet"], "fold": [1], "accuracy": [0.5]}), {"lenet": {"accuracy": 0.5}})
    assert json.loads((cv.path / "cv.json").read_text()) == {"lenet": {"accuracy": 0.5}}
    assert (cv.path / "cv.csv").read_text().splitlines() == ["backbone,fold,accuracy", "lenet,1,0.5"]
