"""The end of a run measured by the metrics `transfer evaluate` uses: `transfer.metrics.classification`
and the steps of `transfer.training.publish`, each against scikit-learn computed here."""

from types import SimpleNamespace

import numpy as np
import pytest
from sklearn import metrics as skm

from transfer.metrics import classification, multilabel
from transfer.training import publish

NAMES = ["ant", "bee", "cat", "dog"]


def _softmax_scores(images: int, classes: int, seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(images, classes)) * 2
    scores = np.exp(logits)
    return (scores / scores.sum(axis=1, keepdims=True)).astype(np.float32)


def _exact(scores: np.ndarray) -> np.ndarray:
    scores = scores.astype(np.float64)
    return scores / scores.sum(axis=1, keepdims=True)


def _run(val_labels: np.ndarray, multi_label: bool = False) -> SimpleNamespace:
    said = []
    return SimpleNamespace(
        options=SimpleNamespace(multi_label=multi_label, calibrate="temperature"), folder=SimpleNamespace(class_names=NAMES),
        data=SimpleNamespace(val_labels=val_labels), reporter=SimpleNamespace(message=said.append), said=said,
    )


def test_the_class_metrics_are_scikit_learns():
    scores = _softmax_scores(40, 4)
    truth = np.random.default_rng(1).integers(0, 3, size=40)  # "dog" never occurs
    measured = classification.measure(scores, truth, NAMES, top_k=2)
    s = measured.summary
    assert s["accuracy"] == pytest.approx(skm.accuracy_score(truth, scores.argmax(1)))
    assert s["log_loss"] == pytest.approx(skm.log_loss(truth, _exact(scores), labels=range(4)))
    assert s["top_k"] == 2 and s["top_k_accuracy"] == pytest.approx(skm.top_k_accuracy_score(truth, scores, k=2, labels=range(4)))
    assert s["classes_absent"] == ["dog"] and s["num_images"] == 40
    assert s["macro_f1"] == pytest.approx(skm.f1_score(truth, scores.argmax(1), labels=[0, 1, 2], average="macro", zero_division=0))
    assert s["weighted_f1"] == pytest.approx(skm.f1_score(truth, scores.argmax(1), labels=[0, 1, 2], average="weighted", zero_division=0))
    assert measured.per_class.loc[NAMES, "f1"].tolist() == pytest.approx(
        skm.f1_score(truth, scores.argmax(1), labels=range(4), average=None, zero_division=0).tolist())
    assert measured.per_class.loc["dog", "support"] == 0
    assert measured.confusion.to_numpy().tolist() == skm.confusion_matrix(truth, scores.argmax(1), labels=range(4)).tolist()
    assert np.allclose(measured.scores.sum(axis=1), 1) and measured.scores.dtype == np.float64


def test_top_k_is_at_most_the_number_of_classes():
    scores, truth = _softmax_scores(10, 4), np.arange(10) % 4
    assert classification.top_k_accuracy(scores, truth, 9) == {"top_k_accuracy": 1.0, "top_k": 4}


def test_a_run_is_measured_as_evaluate_measures_it_and_as_keras_did_before():
    """`val_loss` was Keras' sparse categorical cross-entropy: the same number, to float precision."""
    import keras

    scores = _softmax_scores(50, 4, seed=3)
    truth = np.random.default_rng(4).integers(0, 4, size=50)
    measured = publish.measure(_run(truth), scores, thresholds=None)
    assert set(measured) == {"val_accuracy", "val_loss"}
    assert measured["val_accuracy"] == skm.accuracy_score(truth, scores.argmax(1))
    keras_loss = float(np.mean(keras.ops.convert_to_numpy(keras.losses.sparse_categorical_crossentropy(truth, scores))))
    assert measured["val_loss"] == pytest.approx(keras_loss, rel=1e-5)
    assert measured["val_loss"] == pytest.approx(skm.log_loss(truth, _exact(scores), labels=range(4)))


def test_a_multi_label_run_gets_each_labels_best_f1_threshold_and_scikit_learns_scores():
    rng = np.random.default_rng(5)
    targets = (rng.random((60, 4)) < 0.4).astype(np.float32)
    probabilities = np.clip(0.6 * targets + 0.5 * rng.random((60, 4)), 0, 1).astype(np.float32)
    run = _run(targets, multi_label=True)
    thresholds = publish.pick_thresholds(run, probabilities)
    assert list(thresholds) == NAMES
    assert list(thresholds.values()) == pytest.approx(multilabel.choose_thresholds(probabilities, targets).tolist())
    assert run.said and run.said[0].startswith("Thresholds chosen on the validation split")
    measured = publish.measure(run, probabilities, thresholds)
    chosen = probabilities >= np.array(list(thresholds.values()))
    assert measured["val_map"] == pytest.approx(np.mean([skm.average_precision_score(targets[:, j], probabilities[:, j]) for j in range(4)]))
    assert measured["val_micro_f1"] == pytest.approx(skm.f1_score(targets, chosen, average="micro"))
    assert measured["val_macro_f1"] == pytest.approx(skm.f1_score(targets, chosen, average="macro"))
    assert measured["val_accuracy"] == pytest.approx(skm.accuracy_score(targets, chosen))  # subset accuracy
    assert measured["val_loss"] == pytest.approx(skm.log_loss(targets.ravel(), probabilities.ravel().astype(np.float64)), rel=1e-4)


def test_a_single_label_run_has_no_thresholds_and_a_multi_label_run_no_temperature():
    probabilities = _softmax_scores(8, 4)
    assert publish.pick_thresholds(_run(np.arange(8) % 4), probabilities) is None
    multi = _run(np.zeros((8, 4), np.float32), multi_label=True)
    assert publish.calibrate(multi, probabilities) is None and "not temperature-scaled" in multi.said[0]


def test_the_multi_label_decision_counts_are_scikit_learns():
    rng = np.random.default_rng(6)
    targets, chosen = (rng.random((30, 4)) < 0.5).astype(np.float32), rng.random((30, 4)) < 0.5
    counts = multilabel.decision_counts(chosen, targets, NAMES)
    for j, name in enumerate(NAMES):
        (tn, fp), (fn, tp) = skm.multilabel_confusion_matrix(targets, chosen)[j]
        assert counts.loc[name].tolist() == [tp, fp, fn, tn]
