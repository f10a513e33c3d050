"""`transfer.evaluation.prediction`: which files are read, the top-k and minimum-confidence rules, and what
`predict` yields for a real run, checked against the Keras model's own output computed here."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import write_png
from transfer.core.errors import DataError, InvalidOptionError
from transfer.evaluation.prediction import (
    LOW_CONFIDENCE, NOVEL, UNKNOWN, Prediction, answer, collect_images, decision_rule, predict, resolve_min_confidence, resolve_top_k,
)
from transfer.core.progress import Reporter
from transfer.evaluation.scorers import Scored


class Recorder(Reporter):
    def __init__(self):
        self.lines = []

    def message(self, text):
        self.lines.append(text)


# collect_images


def test_collect_images_reads_folders_recursively_in_order_and_says_what_it_leaves_out(tmp_path):
    folder = tmp_path / "in"
    for name in ("b.png", "a.jpg", "sub/c.webp", "sub/deeper/d.gif"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"anything: the extension decides here")
    (folder / "notes.txt").write_text("x")
    (folder / ".hidden.png").write_bytes(b"x")
    named = tmp_path / "named.data"  # a file named by the user is read whatever its extension
    named.write_bytes(b"x")
    paths, skipped = collect_images([folder, named])
    assert paths == [str(folder / "a.jpg"), str(folder / "b.png"), str(folder / "sub" / "c.webp"),
                     str(folder / "sub" / "deeper" / "d.gif"), str(named)]
    reasons = dict(skipped)
    assert set(reasons) == {str(folder / "notes.txt"), str(folder / ".hidden.png")}
    assert "not an image file" in reasons[str(folder / "notes.txt")] and "'.txt'" in reasons[str(folder / "notes.txt")]
    assert reasons[str(folder / ".hidden.png")] == "hidden file"


def test_collect_images_refuses_a_missing_path_and_skips_a_named_pipe(tmp_path):
    with pytest.raises(DataError, match="nothing.png does not exist; pass image files or folders of images"):
        collect_images([tmp_path / "nothing.png"])
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    assert collect_images([pipe]) == ([], [(str(pipe), "a named pipe, not a regular file (only files are read)")])


# The answer and the top k


@pytest.mark.parametrize("probability, floor, expected", [(0.5, 0.5, "cat"), (0.4999, 0.5, UNKNOWN), (0.1, 0.0, "cat")])
def test_answer_is_the_label_from_the_minimum_confidence_up(probability, floor, expected):
    assert answer("cat", probability, floor) == expected


def test_resolve_min_confidence_takes_the_option_then_the_exports_then_zero():
    exported = {"export": {"min_confidence": 0.4}}
    assert resolve_min_confidence(None, ["a", "b"], {}) == 0.0
    assert resolve_min_confidence(None, ["a", "b"], exported) == 0.4
    assert resolve_min_confidence(0.25, ["a", "b"], exported) == 0.25
    assert resolve_min_confidence(0.0, ["a", "b"], exported) == 0.0, "0 given turns the export's threshold off"


@pytest.mark.parametrize("value", [1.0, -0.01, 1.5])
def test_resolve_min_confidence_refuses_out_of_range(value):
    with pytest.raises(InvalidOptionError) as raised:
        resolve_min_confidence(value, ["a", "b"], {})
    assert str(raised.value) == f"--min-confidence must be a probability from 0 up to 1 (not included); received {value!r}."
    assert resolve_min_confidence(0.999, ["a", "b"], {}) == 0.999


def test_a_model_with_a_class_named_unknown_takes_no_threshold():
    with pytest.raises(InvalidOptionError, match=r"--min-confidence must be 0 for this model: it has a class named 'unknown'.*received 0\.3"):
        resolve_min_confidence(0.3, ["cat", "unknown"], {})
    with pytest.raises(InvalidOptionError, match="class named 'unknown'"):
        resolve_min_confidence(None, ["cat", "unknown"], {"export": {"min_confidence": 0.3}})
    assert resolve_min_confidence(None, ["cat", "unknown"], {}) == 0.0


@pytest.mark.parametrize("top_k, classes, expected, said", [
    (None, 10, 3, False), (None, 2, 2, False), (1, 10, 1, False), (10, 10, 10, False), (11, 10, 10, True), (50, 4, 4, True),
])
def test_resolve_top_k(top_k, classes, expected, said):
    recorder = Recorder()
    assert resolve_top_k(top_k, classes, recorder) == expected
    if said:
        assert recorder.lines == [f"--top-k {top_k}: the model has {classes} classes, so all {classes} are shown."]
    else:
        assert recorder.lines == []


@pytest.mark.parametrize("top_k", [0, -1])
def test_resolve_top_k_refuses_below_one(top_k):
    with pytest.raises(InvalidOptionError, match=rf"--top-k must be an integer >= 1; received {top_k}\."):
        resolve_top_k(top_k, 10)


# The decision rule on scores written here


def test_single_label_rule_orders_by_probability_and_keeps_ties_in_class_order():
    rule = decision_rule(["a", "b", "c", "d"], {}, min_confidence=0.5, threshold=None)
    prediction = rule("x.png", np.array([0.1, 0.3, 0.3, 0.3]), 3)
    assert (prediction.labels, prediction.probabilities) == (["b", "c", "d"], pytest.approx([0.3, 0.3, 0.3]))
    assert prediction.answer == UNKNOWN, "0.3 is below 0.5"
    sure = rule("y.png", np.array([0.05, 0.05, 0.6, 0.3]), 2)
    assert (sure.labels, sure.answer, sure.chosen) == (["c", "d"], "c", None)
    assert sure.to_dict() == {"path": "y.png", "answer": "c", "predictions": [{"label": "c", "probability": pytest.approx(0.6)},
                                                                                {"label": "d", "probability": pytest.approx(0.3)}]}


def test_the_detector_answers_unknown_beyond_its_threshold_and_says_which_reason():
    rule = decision_rule(["a", "b"], {}, min_confidence=0.7, threshold=None, novelty=0.5)
    far, unsure, sure = (rule("x.png", Scored(np.array([0.9, 0.1]), n), 2) for n in (0.51, 0.2, 0.5))
    assert (far.answer, far.why_unknown, far.labels, far.probabilities) == (UNKNOWN, NOVEL, ["a", "b"], pytest.approx([0.9, 0.1])), \
        "a novel image keeps its ranked labels and probabilities"
    assert (sure.answer, sure.why_unknown, sure.to_dict()["novelty"]) == ("a", None, 0.5), "at the threshold is not beyond it"
    low = rule("y.png", Scored(np.array([0.6, 0.4]), 0.2), 2)
    assert (unsure.answer, low.answer, low.why_unknown, low.to_dict()["why_unknown"]) == ("a", UNKNOWN, LOW_CONFIDENCE, LOW_CONFIDENCE)
    named = decision_rule(["unknown", "b"], {}, min_confidence=None, threshold=None)("n.png", Scored(np.array([0.9, 0.1])), 2)
    assert (named.answer, named.why_unknown) == ("unknown", None), "a class's own name is no reason"
    multi = decision_rule(["a", "b"], {"multi_label": True}, min_confidence=None, threshold=0.5, novelty=0.5)
    assert (multi("z.png", Scored(np.array([0.9, 0.6]), 0.9), 1).answer, multi("z.png", Scored(np.array([0.9, 0.6]), 0.1), 1).answer) == (UNKNOWN, "a;b")


def test_single_label_rule_refuses_a_threshold():
    with pytest.raises(InvalidOptionError, match=r"--threshold must be given only for a multi-label model.*received 0\.5"):
        decision_rule(["a", "b"], {}, min_confidence=None, threshold=0.5)


def test_multi_label_rule_gives_the_labels_that_reach_their_thresholds_and_the_top_k():
    config = {"multi_label": True, "thresholds": {"a": 0.5, "b": 0.9, "c": 0.1, "d": 0.5}}
    rule = decision_rule(["a", "b", "c", "d"], config, min_confidence=None, threshold=None)
    prediction = rule("x.png", np.array([0.6, 0.8, 0.05, 0.55]), 1)
    # a (0.6 >= 0.5) and d (0.55 >= 0.5) are chosen; b (0.8 < 0.9) is only the top 1; c neither.
    assert prediction.chosen == ["a", "d"] and prediction.answer == "a;d"
    assert prediction.labels == ["b", "a", "d"] and prediction.probabilities == pytest.approx([0.8, 0.6, 0.55])
    assert prediction.to_dict()["labels"] == ["a", "d"]
    everything = decision_rule(["a", "b", "c", "d"], config, min_confidence=None, threshold=0.7)("y.png", np.array([0.6, 0.8, 0.05, 0.55]), 1)
    assert everything.chosen == ["b"] and everything.answer == "b"
    nothing = decision_rule(["a", "b"], {"multi_label": True}, min_confidence=None, threshold=0.99)("z.png", np.array([0.2, 0.7]), 1)
    assert (nothing.chosen, nothing.answer, nothing.labels) == ([], "", ["b"])
    with pytest.raises(InvalidOptionError, match="--min-confidence must be given only for a single-label model"):
        decision_rule(["a", "b"], {"multi_label": True}, min_confidence=0.2, threshold=None)


# predict: refusals before any model is loaded


@pytest.mark.parametrize("options, fragment", [
    (dict(top_k=0), "--top-k must be an integer >= 1; received 0."),
    (dict(batch_size=0), "--batch-size must be an integer between 1 and 65536; received 0."),
    (dict(min_confidence=1.0), "--min-confidence must be a probability from 0 up to 1 (not included); received 1.0."),
    (dict(threshold=1.0), "--threshold must be a probability between 0 and 1 (both excluded); received 1.0."),
])
def test_predict_refuses_bad_options_before_reading_anything(tmp_path, options, fragment):
    image = write_png(tmp_path / "a.png")
    with pytest.raises(InvalidOptionError) as raised:
        list(predict(tmp_path / "no-such-run", [image], **options))
    assert str(raised.value) == fragment


def test_predict_refuses_a_folder_without_images_naming_what_it_left_out(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "readme.md").write_text("x")
    with pytest.raises(DataError) as raised:
        list(predict(tmp_path / "no-such-run", [tmp_path / "in"]))
    assert "No image files" in str(raised.value) and "1 other file(s) left out" in str(raised.value)
    assert "readme.md" in str(raised.value)


# predict on a real run


def keras_probabilities(run: Path, paths: list[Path]) -> np.ndarray:
    """The run's model applied here, to pixels read with Pillow: the digits are 32 x 32, LeNet's
    input, so no resizing is involved; gray becomes RGB by repeating the channel, as the decoder does."""
    import keras

    import transfer.models.heads  # noqa: F401  (registers the layers the run's model uses)
    import transfer.data.preprocessing  # noqa: F401
    from PIL import Image

    model = keras.saving.load_model(run / "model.keras", compile=False)
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p in paths])
    assert pixels.shape[1:] == (32, 32, 3) == tuple(model.input_shape[1:])
    return np.asarray(model(pixels, training=False))


@pytest.mark.slow  # trains the session's LeNet run (about 40 s here) unless another test did
def test_predict_gives_the_models_top_k_in_order(digits_run, digits_dir, tmp_path):
    folder = tmp_path / "in"
    chosen = [sorted((digits_dir / str(digit)).iterdir())[i] for digit in (1, 4, 7, 8) for i in (0, 1)]
    for i, source in enumerate(chosen):
        (folder / f"sub{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(source, folder / f"sub{i % 2}" / f"{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.txt").write_text("x")
    expected_order = sorted(folder.glob("sub*/*.png"))
    probabilities = keras_probabilities(digits_run, expected_order)
    labels = (digits_run / "labels.txt").read_text().split()
    assert labels == [str(d) for d in range(10)]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)

    tops = np.sort(probabilities.max(axis=1))
    gap = next(i for i in range(len(tops) - 1) if tops[i + 1] - tops[i] > 1e-4)  # a floor between two images' top probability
    floor = float((tops[gap] + tops[gap + 1]) / 2)
    predictions = list(predict(digits_run, [folder], top_k=4, batch_size=3, min_confidence=floor))

    assert predictions[0].path == str(folder / "notes.txt"), "files left out come first"
    assert predictions[0].error.startswith("not an image file") and predictions[0].labels == []
    scored = predictions[1:]
    assert [p.path for p in scored] == [str(folder / "broken.png")] + [str(p) for p in expected_order]
    assert scored[0].error and scored[0].labels == [] and scored[0].answer is None
    assert all(p.error is None for p in scored[1:])
    for prediction, row in zip([p for p in scored if p.error is None], probabilities):
        order = np.argsort(-row, kind="stable")[:4]
        assert prediction.labels == [labels[i] for i in order]
        np.testing.assert_allclose(prediction.probabilities, row[order], atol=1e-5)
        assert prediction.probabilities == sorted(prediction.probabilities, reverse=True)
        rest = row.sum() - row[order].sum()
        assert sum(prediction.probabilities) + rest == pytest.approx(1, abs=1e-5)
        assert prediction.answer == (labels[order[0]] if row[order[0]] >= floor else UNKNOWN)
    answers = [p.answer for p in scored if p.error is None]
    assert UNKNOWN in answers and set(answers) != {UNKNOWN}, "the floor lies between two images' top probability"


@pytest.mark.slow  # trains the session's LeNet run (about 40 s here) unless another test did
def test_predict_reports_the_broken_file_and_answers_the_rest(digits_run, digits_dir, tmp_path):
    good = tmp_path / "good.png"
    shutil.copy(sorted((digits_dir / "3").iterdir())[0], good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    predictions = {p.path: p for p in predict(digits_run, [broken, good])}
    assert set(predictions) == {str(broken), str(good)}
    assert predictions[str(broken)].error and predictions[str(broken)].labels == [] and predictions[str(broken)].answer is None
    assert "error" in predictions[str(broken)].to_dict()
    expected = keras_probabilities(digits_run, [good])[0]
    assert predictions[str(good)].error is None
    assert predictions[str(good)].labels[0] == str(int(np.argmax(expected)))
    assert len(predictions[str(good)].labels) == 3, "three labels by default"
    with pytest.raises(InvalidOptionError, match="--weights must be given only with imagenet:NAME"):
        list(predict(digits_run, [good], weights="x.h5"))


def test_prediction_to_dict_of_an_error():
    assert Prediction("x.png", error="truncated").to_dict() == {"path": "x.png", "answer": None, "predictions": [], "error": "truncated"}


def test_a_savedmodel_is_sent_heic_and_avif_as_png_its_own_decoder_reads(tmp_path):
    """The export's graph decodes JPEG/PNG/GIF/BMP/WebP only; its scorer (predict, serve) converts the rest first."""
    import io

    import pillow_heif
    import tensorflow as tf
    from PIL import Image

    from transfer.core.errors import BadImageError
    from transfer.data.preprocessing import decode_image
    from transfer.evaluation.scorers import SavedModelScorer

    pillow_heif.register_heif_opener()

    def encoded(fmt):
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (30, 60, 200)).save(buffer, format=fmt, quality=95)
        return buffer.getvalue()

    scorer = object.__new__(SavedModelScorer)  # its signature stood in for by the graph decoder it holds
    scorer.image_size = 8
    scorer.serve = lambda images: {"scores": tf.map_fn(lambda c: tf.reduce_mean(decode_image(c, 8), [0, 1]), images, fn_output_signature=tf.float32)}
    heic, avif = tmp_path / "a.heic", tmp_path / "b.avif"
    heic.write_bytes(encoded("HEIF"))
    avif.write_bytes(encoded("AVIF"))
    np.testing.assert_allclose(scorer.score_encoded([heic.read_bytes(), avif.read_bytes()]).probabilities, [(30, 60, 200)] * 2, atol=6)
    scored = dict(scorer.score_files([str(heic), str(avif)], batch_size=2))
    np.testing.assert_allclose(scored[str(avif)].probabilities, (30, 60, 200), atol=6)
    with pytest.raises(BadImageError, match="a damaged HEIC image"):
        scorer.score_encoded([heic.read_bytes()[:100]])
