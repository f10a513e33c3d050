"""Exports: the SavedModel's serving signature at its edges (no image, a file that is not one), and
every format through its own runtime against the Keras model."""

import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from typer.testing import CliRunner

from transfer.cli import app
from transfer.deploy.export import ExportOptions, export
from transfer.models.saving import load_run_model
from transfer.outputs import artifacts, layout, publishing

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def serve(digits_run, tmp_path_factory):
    path = export(digits_run, tmp_path_factory.mktemp("export") / "digits").path
    assert publishing.marker_of(path)["kind"] == "export"
    return tf.saved_model.load(str(path)).signatures["serving_default"]


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (32, 32), value).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_empty_batch_gets_empty_answers(serve):
    answer = serve(images=tf.constant([], dtype=tf.string))
    assert answer["labels"].shape == (0, 3) and answer["probabilities"].shape == (0, 3)
    assert answer["scores"].shape == (0, 10)


def test_a_file_that_is_not_an_image_is_named_by_its_index(serve):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images\[1\] is not a JPEG, PNG, GIF, BMP or WebP file"):
        serve(images=tf.constant([png(0), b"%PDF-1.7 not an image", png(255)]))
    answer = serve(images=tf.constant([png(0), png(255)]))
    assert answer["labels"].shape == (2, 3)
    np.testing.assert_allclose(answer["scores"].numpy().sum(axis=1), 1, atol=1e-5)


# --- Every format, through its own runtime -------------------------------------------------------


@pytest.fixture(scope="module")
def augmented_run(digits_dir, tmp_path_factory):
    """LeNet-5 with its augmentation block (flips off, translations on), one epoch: exports must leave
    the block's random ops out."""
    from transfer.training.options import TrainOptions
    from transfer.training.train import train

    out = tmp_path_factory.mktemp("augmented") / "lenet"
    return train(digits_dir, out, TrainOptions(backbone="lenet", epochs=1, flip="none", seed=5), verbose=0).run_dir


@pytest.fixture(scope="module")
def reference(augmented_run):
    """The run's validation images, decoded by PIL (not the project's decoder: they are 32x32 PNGs
    already, so no resizing is involved), and the Keras model's softmax on them."""
    import keras

    import transfer.data.preprocessing  # noqa: F401  (registers the Preprocess layer)

    paths = artifacts.Run.open(augmented_run).validation_images()["path"].tolist()
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p in paths])
    assert pixels.shape[1:] == (32, 32, 3)
    model = keras.saving.load_model(augmented_run / layout.MODEL, compile=False)
    assert "augmentation" in [layer.name for layer in model.layers]
    return paths, pixels, np.asarray(model(pixels, training=False))


@pytest.fixture(scope="module")
def reference_novelty(augmented_run, reference):
    """The run's detector's novelty scores of the reference images, by NumPy (`NoveltyDetector.score`) on
    the features of training's own extractor (`frozen_extractor`), not by the graph's `NoveltyScore`."""
    from transfer.models.registry import run_backbone
    from transfer.models.saving import load_run_model
    from transfer.training.features import frozen_extractor

    run = artifacts.Run.open(augmented_run)
    extractor = frozen_extractor(load_run_model(run), run_backbone(run.config()), False)
    return run.detector().score(np.asarray(extractor(reference[1], training=False)))


RANDOM_OPS = ("Random", "ImageProjectiveTransform")

# format, quantize, largest probability difference allowed, least top-1 agreement
FORMATS = [
    ("savedmodel", "none", 1e-5, 1.0),
    ("onnx", "none", 1e-4, 1.0),
    ("litert", "none", 1e-4, 1.0),
    ("litert", "float16", 5e-3, 0.99),
    ("litert", "dynamic", 5e-2, 0.98),
    ("litert", "int8", 1e-1, 0.98),
]


@pytest.mark.parametrize("format, quantize, tolerance, least", FORMATS, ids=[f"{f}-{q}" for f, q, _, _ in FORMATS])
def test_each_format_round_trips_through_its_runtime(augmented_run, reference, reference_novelty, tmp_path, format, quantize,
                                                     tolerance, least):
    from transfer.evaluation.scorers import load_scorer

    paths, pixels, expected = reference
    done = export(augmented_run, tmp_path / "export", ExportOptions(format=format, quantize=quantize))
    assert done.images_checked == len(paths)
    assert done.min_agreement == (0.98 if quantize in ("int8", "dynamic") else 0.999)
    assert publishing.marker_of(done.path)["kind"] == "export"
    assert (done.path / layout.LABELS).read_text().split() == [str(d) for d in range(10)]
    config = json.loads((done.path / layout.CONFIG).read_text())["export"]
    assert config["format"] == format and config["quantize"] == quantize and config["agreement"] == done.agreement

    scorer = load_scorer(done.path)  # the export's own runtime
    rows = [scorer.score_pixels(pixels)] if format != "savedmodel" else [s for _, s in scorer.score_files(paths, batch_size=64)]
    scores, novelty = np.vstack([s.probabilities for s in rows]), np.hstack([s.novelty for s in rows])
    assert np.abs(scores - expected).max() <= tolerance
    # The detector travels inside the file: its novelty is NumPy's on training's features, within the format's precision.
    assert scorer.unknown_threshold == artifacts.Run.open(augmented_run).detector().threshold
    assert np.abs(novelty - reference_novelty).max() <= max(1e-4, 2 * tolerance), np.abs(novelty - reference_novelty).max()
    agreement = np.mean(scores.argmax(1) == expected.argmax(1))
    assert agreement >= least
    # The export's own check reports what this test measures itself, through the runtime, on the same images.
    assert done.agreement == pytest.approx(agreement, abs=1 / len(paths))
    assert not [op for op in _ops(done.path, format) if op.startswith(RANDOM_OPS)], "augmentation traced into the export"


def _ops(path: Path, format: str) -> set[str]:
    """The operation types in an exported graph."""
    if format == "onnx":
        import onnx

        graph = onnx.load(str(path / layout.ONNX_MODEL)).graph
        return {node.op_type for node in graph.node}
    if format == "litert":
        from ai_edge_litert.interpreter import Interpreter

        return {op["op_name"] for op in Interpreter(model_path=str(path / layout.LITERT_MODEL))._get_ops_details()}
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((path / layout.SAVED_MODEL).read_bytes())
    graph = saved.meta_graphs[0].graph_def
    return {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}


def test_int8_quantizes_the_backbone_and_keeps_the_head_float(augmented_run, cli_exports, reference, tmp_path):
    """The head (dense, softmax) of a run transferred onto LeNet's convolutions stays float32 in the
    int8 file (it was int8, with scores in steps of 1/256 that tied close decisions), and the file's
    answers, read through LiteRT, agree with the Keras model's."""
    import re

    import onnx
    from ai_edge_litert.interpreter import Interpreter

    from transfer.training.options import TrainOptions
    from transfer.training.train import train

    digits_dir = Path(json.loads((augmented_run / layout.CONFIG).read_text())["data"])
    transferred = train(digits_dir, tmp_path / "transferred", TrainOptions(backbone="lenet", weights=str(augmented_run),
                                                                           epochs=1, flip="none", seed=5), verbose=0).run_dir
    int8 = export(transferred, tmp_path / "int8", ExportOptions(format="litert", quantize="int8"))
    interpreter = Interpreter(model_path=str(int8.path / layout.LITERT_MODEL))
    (given,), returned = interpreter.get_input_details(), interpreter.get_output_details()
    assert given["dtype"] == np.float32 and list(given["shape"][1:]) == [32, 32, 3]
    assert sorted(len(output["shape"]) for output in returned) == [1, 2], "the novelty [N] beside the scores [N, classes]"
    assert {output["dtype"] for output in returned} == {np.float32}
    dtypes = {tensor["index"]: tensor["dtype"] for tensor in interpreter.get_tensor_details()}
    computed = {}
    for op in interpreter._get_ops_details():
        computed.setdefault(op["op_name"], set()).add(dtypes[op["outputs"][0]])
    assert computed["CONV_2D"] == {np.int8}  # the backbone: full integer
    assert computed["SOFTMAX"] == {np.float32} and np.float32 in computed["FULLY_CONNECTED"]  # the head
    assert computed["SQRT"] == computed["SELECT_V2"] == {np.float32}  # the detector, to its output
    paths, pixels, _ = reference
    keras_scores = np.asarray(load_run_model(artifacts.Run.open(transferred))(pixels, training=False))
    from transfer.evaluation.scorers import load_scorer

    scores = load_scorer(int8.path).score_pixels(pixels).probabilities
    assert np.mean(scores.argmax(1) == keras_scores.argmax(1)) >= 0.98
    assert int8.agreement >= 0.98  # split into confident images and the others, which together are all checked
    assert sum(int(n) for n in re.findall(r"of the (\d+)", int8.agreement_split)) == int8.images_checked
    float32 = (cli_exports / "litert" / layout.LITERT_MODEL).stat().st_size
    banks = [artifacts.Run.open(run).detector().state["bank"].size * 4 for run in (transferred, augmented_run)]  # float32 in both
    assert int8.size_bytes - banks[0] < 0.4 * (float32 - banks[1])  # int8 weights are a quarter of float32 ones

    proto = onnx.load(str(cli_exports / "onnx" / layout.ONNX_MODEL))
    assert json.loads({p.key: p.value for p in proto.metadata_props}["labels"]) == [str(d) for d in range(10)]
    assert sorted(o.name for o in proto.graph.output) == ["novelty", "scores"] and proto.graph.input[0].name == "image"
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "model.onnx").write_bytes((cli_exports / "onnx" / layout.ONNX_MODEL).read_bytes())
    from transfer.evaluation.scorers import load_scorer

    assert load_scorer(alone / "model.onnx").labels == [str(d) for d in range(10)]  # from its metadata


def _rolled(scored):
    """Answers shifted by one class, the novelty kept."""
    from transfer.evaluation.scorers import Scored

    return Scored(np.roll(scored.probabilities, 1, axis=1), scored.novelty)


def test_an_export_that_disagrees_is_refused_and_nothing_is_written(augmented_run, tmp_path, monkeypatch):
    """A LiteRT runtime whose answers are shifted by one class: the check refuses it, the earlier
    export at the destination stays as it was, and no staging folder is left behind."""
    from transfer.core.errors import ExportCheckError
    from transfer.evaluation import scorers

    out = tmp_path / "export"
    earlier = export(augmented_run, out, ExportOptions(format="litert"))
    before = (out / layout.LITERT_MODEL).read_bytes()
    honest = scorers.LiteRTScorer.score_pixels
    monkeypatch.setattr(scorers.LiteRTScorer, "score_pixels", lambda self, pixels: _rolled(honest(self, pixels)))
    with pytest.raises(ExportCheckError, match=r"agrees with the Keras model on \d+\.\d% of \d+ images .*, below --min-agreement 0.999"):
        export(augmented_run, out, ExportOptions(format="litert"), force=True)
    assert (out / layout.LITERT_MODEL).read_bytes() == before and earlier.agreement == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_a_refused_int8_export_advises_an_option_that_then_works(augmented_run, tmp_path, monkeypatch):
    """The refusal names a --quantize choice; exporting with it, as advised, passes its own check."""
    import re

    from transfer.evaluation import scorers

    honest = scorers.LiteRTScorer.score_pixels
    monkeypatch.setattr(scorers.LiteRTScorer, "score_pixels", lambda self, pixels: _rolled(honest(self, pixels)))
    refused = runner.invoke(app, ["export", str(augmented_run), "--format", "litert", "--quantize", "int8", "--out", str(tmp_path / "int8")])
    assert refused.exit_code == 1 and not (tmp_path / "int8").exists()
    advised = re.search(r"Try --quantize (\w+)", " ".join(refused.output.split()))
    assert advised and advised.group(1) != "int8", refused.output
    monkeypatch.undo()
    done = runner.invoke(app, ["export", str(augmented_run), "--format", "litert", "--quantize", advised.group(1), "--out", str(tmp_path / "advised")])
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "advised" / layout.CONFIG).read_text())["export"]["agreement"] >= 0.999


@pytest.fixture(scope="module")
def cli_exports(augmented_run, tmp_path_factory) -> Path:
    """The run exported to LiteRT and ONNX by the command line, under `litert/` and `onnx/`."""
    folder = tmp_path_factory.mktemp("cli-exports")
    for format in ("litert", "onnx"):
        written = runner.invoke(app, ["export", str(augmented_run), "--format", format, "--out", str(folder / format)])
        assert written.exit_code == 0, written.output
        assert written.stdout.strip().splitlines() == [next(line for line in written.stdout.splitlines() if "written to" in line)], \
            "stdout carries the result alone, no converter chatter"
    return folder


def test_predict_and_evaluate_read_the_exported_files(augmented_run, cli_exports, digits_dir):
    """`transfer predict` on the .tflite and .onnx files gives the run's own labels; `transfer
    evaluate` on the .onnx file the run's accuracy, and writes beside the export folder."""
    tmp_path = cli_exports
    images = [str(digits_dir / str(d) / sorted(os.listdir(digits_dir / str(d)))[0]) for d in range(10)]

    def labels(model: Path) -> list[list[str]]:
        result = runner.invoke(app, ["predict", str(model), *images, "--format", "json"])
        assert result.exit_code == 0, result.output
        return [[p["label"] for p in entry["predictions"]] for entry in json.loads(result.stdout)]

    expected = labels(augmented_run)
    assert labels(tmp_path / "litert" / layout.LITERT_MODEL) == expected
    assert labels(tmp_path / "onnx" / layout.ONNX_MODEL) == expected
    result = runner.invoke(app, ["evaluate", str(tmp_path / "onnx" / layout.ONNX_MODEL), str(digits_dir)])
    assert result.exit_code == 0, result.output
    onnx_metrics = json.loads((tmp_path / "onnx-evaluation" / layout.METRICS).read_text())
    result = runner.invoke(app, ["evaluate", str(augmented_run), str(digits_dir)])
    assert result.exit_code == 0, result.output
    run_metrics = json.loads((augmented_run / layout.EVALUATION / layout.METRICS).read_text())
    assert onnx_metrics["accuracy"] == pytest.approx(run_metrics["accuracy"], abs=1 / 600)


def test_min_confidence_in_the_signature_and_in_predict(digits_run, digits_dir, tmp_path):
    """The SavedModel's `answer` is the top label where its probability reaches the threshold and
    `unknown` elsewhere; `transfer predict` answers the same on the run."""
    threshold = 0.9
    path = export(digits_run, tmp_path / "export", ExportOptions(min_confidence=threshold)).path
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    images = sorted(str(p) for p in digits_dir.rglob("*.png"))[::20]
    result = serve(images=tf.constant([Path(p).read_bytes() for p in images]))
    top, probability = result["labels"].numpy()[:, 0].astype(str), result["probabilities"].numpy()[:, 0]
    expected = np.where(probability >= threshold, top, "unknown")
    assert result["answer"].numpy().astype(str).tolist() == expected.tolist()
    assert 0 < np.sum(expected == "unknown") < len(images), "the digits run has confident and unsure answers"

    printed = runner.invoke(app, ["predict", str(digits_run), *images, "--format", "json", "--min-confidence", str(threshold)])
    assert printed.exit_code == 0, printed.output
    assert [entry["answer"] for entry in json.loads(printed.stdout)] == expected.tolist()
    # The export remembers its threshold: predicting with it answers the same without the option.
    printed = runner.invoke(app, ["predict", str(path), *images, "--format", "json"])
    assert [entry["answer"] for entry in json.loads(printed.stdout)] == expected.tolist()


def test_a_missing_extra_is_named_before_any_work(digits_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    result = runner.invoke(app, ["export", str(digits_run), "--format", "onnx", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "error: Writing and running ONNX models needs onnxruntime, from an optional part of transfer: "
        "pip install 'keras-transfer[onnx]'."
    )
    assert not (tmp_path / "x").exists()


def test_every_scorer_takes_encoded_files_as_the_server_sends_them(augmented_run, cli_exports, digits_dir, tmp_path):
    """`score_encoded` (what `transfer serve` calls) gives what `score_files` gives, for the run and
    for each export; a file that is not an image is named by its index."""
    from transfer.core.errors import BadImageError
    from transfer.evaluation.scorers import load_scorer

    images = sorted(str(p) for p in digits_dir.rglob("*.png"))[::97]
    contents = [Path(p).read_bytes() for p in images]
    models = [augmented_run, export(augmented_run, tmp_path / "savedmodel").path, cli_exports / "litert", cli_exports / "onnx"]
    for model in models:
        scorer = load_scorer(model)
        expected = [scores for _, scores in scorer.score_files(images, batch_size=4)]
        encoded = scorer.score_encoded(contents)
        np.testing.assert_allclose(encoded.probabilities, np.stack([s.probabilities for s in expected]), atol=1e-5)
        np.testing.assert_allclose(encoded.novelty, [s.novelty for s in expected], atol=1e-3)  # sqrt(2 - 2 cos) near 0: float32 rounding
        with pytest.raises(BadImageError) as refused:
            scorer.score_encoded([contents[0], b"GIF89a truncated", contents[1]])
        assert refused.value.index == 1, model
        with pytest.raises(BadImageError, match="empty file"):
            scorer.score_encoded([b""])


def test_the_savedmodel_stores_each_weight_once(digits_run, tmp_path):
    """Keras' ExportArchive stored every weight twice when the model was also tracked
    (keras-team/keras#23553): the checkpoint holds exactly the model's parameters, and the detector's bank."""
    path = export(digits_run, tmp_path / "export").path
    stored = sum(int(np.prod(shape)) for name, shape in tf.train.list_variables(str(path / "variables" / "variables"))
                 if name != "_CHECKPOINTABLE_OBJECT_GRAPH")
    run = artifacts.Run.open(digits_run)
    assert stored == load_run_model(run).count_params() + run.detector().state["bank"].size


def test_the_lean_onnx_conversion_builds_the_same_graph_as_tf2onnx_alone(augmented_run, reference, tmp_path):
    """`_lean_tf2onnx` (fresh NodeProtos, no deep copies) changes tf2onnx's memory, not its output:
    the same operations and weights, the same scores; and tf2onnx is as it was afterwards."""
    import collections

    import keras
    import onnx
    import onnxruntime
    from tf2onnx.graph import Node

    from transfer.deploy.converters import _lean_tf2onnx
    from transfer.models.classifier import inference_model

    _, pixels, _ = reference
    model = inference_model(keras.saving.load_model(augmented_run / layout.MODEL, compile=False))
    model(pixels[:1])
    original = Node.update_proto
    model.export(str(tmp_path / "plain.onnx"), format="onnx", verbose=False)
    with _lean_tf2onnx():
        assert Node.update_proto is not original
        model.export(str(tmp_path / "lean.onnx"), format="onnx", verbose=False)
    assert Node.update_proto is original and "TF2ONNX_CATCH_ERRORS" not in os.environ

    plain, lean = (onnx.load(str(tmp_path / f"{name}.onnx")).graph for name in ("plain", "lean"))
    assert collections.Counter(n.op_type for n in lean.node) == collections.Counter(n.op_type for n in plain.node)
    assert sorted(onnx.numpy_helper.to_array(t).tobytes() for t in lean.initializer) == sorted(
        onnx.numpy_helper.to_array(t).tobytes() for t in plain.initializer)
    plain_scores, lean_scores = (
        onnxruntime.InferenceSession(str(tmp_path / f"{name}.onnx")).run(None, {"image": pixels})[0] for name in ("plain", "lean"))
    np.testing.assert_array_equal(lean_scores, plain_scores)


def test_the_keras_models_own_stability_under_pixel_noise_is_measured_on_decoded_images(tmp_path):
    """Images whose mean brightness sits on the decision boundary flip under +-2 levels of noise about
    half the time; images far from it never do (the scorer decides by the mean pixel, computed here)."""
    from PIL import Image

    from transfer.core.progress import SILENT
    from transfer.deploy.export import _self_agreement

    class Brightness:
        image_size = 8

        def score_pixels(self, pixels):
            from transfer.evaluation.scorers import Scored

            mean = np.asarray(pixels, np.float64).mean(axis=(1, 2, 3))
            return Scored(np.stack([mean < 127.5, mean >= 127.5], axis=1).astype(np.float32))

    def images(name, levels):
        folder = tmp_path / name
        folder.mkdir()
        paths = []
        for i, level in enumerate(levels):
            pixels = np.full((8, 8, 3), level, np.uint8)
            pixels[::2] = level + 1  # a mean of level + 0.5: 127.5 is the boundary itself
            Image.fromarray(pixels).save(folder / f"{i}.png")
            paths.append(str(folder / f"{i}.png"))
        return paths

    assert _self_agreement(Brightness(), images("far", [20, 60, 200, 240] * 10), SILENT) == 1.0
    near = _self_agreement(Brightness(), images("near", [127] * 60), SILENT)
    assert 0.2 < near < 0.9, near


def test_a_quantized_export_is_held_to_the_keras_models_own_stability(augmented_run, tmp_path, monkeypatch):
    """Below 0.98, an int8 export that changes no more decisions than pixel noise changes in the Keras
    model itself (less the sampling margin) is written, and says what it was held to."""
    from transfer.core.errors import ExportCheckError
    from transfer.deploy import export as export_module
    from transfer.evaluation import scorers

    honest = scorers.LiteRTScorer.score_pixels

    def flip_every_tenth(self, pixels):
        scores = honest(self, pixels)
        scores.probabilities[::10] = np.roll(scores.probabilities[::10], 1, axis=1)
        return scores

    monkeypatch.setattr(scorers.LiteRTScorer, "score_pixels", flip_every_tenth)
    monkeypatch.setattr(export_module, "_self_agreement", lambda reference, paths, reporter: 0.9)
    done = export(augmented_run, tmp_path / "int8", ExportOptions(format="litert", quantize="int8"))
    assert done.agreement < 0.98 and done.min_agreement == pytest.approx(0.9 - export_module.NOISE_MARGIN)
    recorded = json.loads((tmp_path / "int8" / layout.CONFIG).read_text())["export"]
    assert recorded["self_agreement_under_noise"] == 0.9 and "agrees with itself on 90.0%" in recorded["agreement_split"]
    monkeypatch.setattr(export_module, "_self_agreement", lambda reference, paths, reporter: 1.0)
    with pytest.raises(ExportCheckError):  # a stable model holds it to 0.98
        export(augmented_run, tmp_path / "refused", ExportOptions(format="litert", quantize="int8"))
