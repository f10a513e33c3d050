"""Novelty scores (`transfer.metrics.novelty`) on synthetic Gaussian features: each score against an
independent computation, the threshold's held-out share, separation of a far cluster, the refusal
of too few images, and the detector's save/load. NumPy and scikit-learn only, no TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest

from transfer.metrics import novelty

DIMENSIONS = 8


def gaussian_classes(per_class: int, classes: int = 3, seed: int = 0, offset: float = 0.0):
    """`(features, labels)`: `classes` unit Gaussians around means 4 apart (shifted by `offset`)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0.0, 4.0, (classes, DIMENSIONS)) + 10.0 + offset
    labels = np.repeat(np.arange(classes), per_class)
    return centres[labels] + rng.normal(size=(len(labels), DIMENSIONS)), labels


def test_knn_score_is_the_brute_force_kth_neighbour_distance():
    bank, _ = gaussian_classes(20, seed=1)
    queries, _ = gaussian_classes(5, seed=2)
    k = 3
    unit_bank = bank / np.sqrt((bank ** 2).sum(axis=1))[:, None]
    expected = []
    for query in queries:
        unit = query / np.sqrt((query ** 2).sum())
        distances = sorted(np.sqrt(((unit - row) ** 2).sum()) for row in unit_bank)
        expected.append(distances[k - 1])
    found = novelty.knn_scores(novelty.normalise(bank), queries, k)
    np.testing.assert_allclose(found, expected, atol=1e-6)


def test_knn_k_keeps_one_in_a_thousand_and_at_least_one():
    assert [novelty.knn_k(n) for n in (10, 400, 50_000, 1_281_167)] == [1, 1, 50, 1281]


def test_mahalanobis_score_matches_the_explicit_formula():
    features, labels = gaussian_classes(30, seed=3)
    queries, _ = gaussian_classes(4, seed=4, offset=1.5)
    state = novelty.mahalanobis_statistics(features, labels)
    means = np.stack([features[labels == c].mean(axis=0) for c in range(3)])
    np.testing.assert_allclose(state["means"], means)
    # Ledoit-Wolf (2004): shrink the pooled within-class covariance S towards mu I, mu = trace(S) / D
    centred = features - means[labels]
    sample = centred.T @ centred / len(centred)
    mu = np.trace(sample) / DIMENSIONS
    delta = ((sample - mu * np.eye(DIMENSIONS)) ** 2).sum() / DIMENSIONS
    beta = sum((((np.outer(x, x) - sample) ** 2).sum() for x in centred)) / DIMENSIONS / len(centred) ** 2
    shrinkage = min(beta, delta) / delta
    covariance = shrinkage * mu * np.eye(DIMENSIONS) + (1 - shrinkage) * sample
    np.testing.assert_allclose(np.linalg.inv(state["precision"]), covariance, rtol=1e-6, atol=1e-9)
    precision = np.linalg.inv(covariance)
    expected = [min((q - m) @ precision @ (q - m) for m in means) for q in queries]
    np.testing.assert_allclose(novelty.mahalanobis_scores(state["means"], state["precision"], queries), expected, rtol=1e-6)
    # mahalanobis_l2: the same distances between the rows divided by their norms
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    unit_means = np.stack([unit[labels == c].mean(axis=0) for c in range(3)])
    unit_precision = novelty.mahalanobis_statistics(unit, labels)["precision"]  # its covariance checked above
    unit_queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    expected = [min((q - m) @ unit_precision @ (q - m) for m in unit_means) for q in unit_queries]
    state = novelty.fit_state("mahalanobis_l2", features, labels)
    np.testing.assert_allclose(novelty.method_scores("mahalanobis_l2", state, queries), expected, rtol=1e-6)


def test_probability_scores_match_their_definitions():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0], [10.0, -3.0, 1.0]])
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(novelty.max_softmax_scores(probabilities), 1 - probabilities.max(axis=1))
    np.testing.assert_allclose(novelty.energy_scores(logits), -np.log(np.exp(logits).sum(axis=1)))
    np.testing.assert_allclose(novelty.method_scores("max_softmax", {}, logits=logits), 1 - probabilities.max(axis=1))
    # two classes: scikit-learn's one decision column z is the logit pair [0, z]
    pair = novelty.logits_from_decision(np.array([1.5, -0.5]))
    np.testing.assert_allclose(novelty.softmax(pair)[:, 1], 1 / (1 + np.exp(-np.array([1.5, -0.5]))))


@pytest.mark.parametrize("method", novelty.FEATURE_METHODS)
def test_threshold_rejects_the_stated_share_of_held_out_in_class_images(method):
    features, labels = gaussian_classes(400, seed=5)
    detector = novelty.fit_threshold(method, features, labels, share=0.05, seed=0)
    assert detector.held_out_scores.shape == (1200,)
    assert np.mean(detector.held_out_scores > detector.threshold) == pytest.approx(0.05, abs=0.002)
    fresh, fresh_labels = gaussian_classes(1000, seed=6)  # new in-class images: about 5% too
    assert np.mean(detector.is_unknown(detector.score(fresh))) == pytest.approx(0.05, abs=0.02)


def test_a_far_cluster_separates_and_the_same_distribution_does_not():
    features, labels = gaussian_classes(100, seed=7)
    same, _ = gaussian_classes(100, seed=8)
    far = np.random.default_rng(9).normal(-10.0, 1.0, (300, DIMENSIONS))
    for method in novelty.FEATURE_METHODS:
        detector = novelty.fit_threshold(method, features, labels, seed=1)
        result = novelty.separation(detector.score(same), detector.score(far), detector.threshold)
        assert result["auroc"] > 0.99 and result["out_unknown"] > 0.95, (method, result)
        other, _ = gaussian_classes(100, seed=10)
        assert abs(novelty.auroc(detector.score(same), detector.score(other)) - 0.5) < 0.1, method


def test_probability_scores_fit_their_threshold_with_fold_classifiers():
    from sklearn.linear_model import LogisticRegression

    features, labels = gaussian_classes(60, seed=11)
    calls = []

    def logits_of(fit_x, fit_y, score_x):
        calls.append((len(fit_y), len(score_x)))
        return novelty.logits_from_decision(LogisticRegression(max_iter=1000).fit(fit_x, fit_y).decision_function(score_x))

    detector = novelty.fit_threshold("energy", features, labels, share=0.1, logits_of=logits_of)
    assert calls == [(144, 36)] * 5  # 5 folds, each scored by a classifier that never saw it
    assert np.mean(detector.held_out_scores > detector.threshold) == pytest.approx(0.1, abs=0.01)
    with pytest.raises(ValueError, match="needs a fold classifier"):
        novelty.fit_threshold("max_softmax", features, labels)


def test_too_few_images_are_refused_in_one_line_naming_the_minimum():
    features, labels = gaussian_classes(6, seed=12)  # 18 images
    with pytest.raises(novelty.TooFewImagesError) as refused:
        novelty.fit_threshold("knn", features, labels)
    message = str(refused.value)
    assert "\n" not in message and f"at least {novelty.MIN_IMAGES}" in message and "received 18 images" in message
    features, labels = gaussian_classes(30, seed=12)
    with pytest.raises(novelty.TooFewImagesError, match="the smallest class 1"):
        novelty.fit_threshold("knn", features[:61], labels[:61])
    assert novelty.check_enough(labels[:62]) == 2


@pytest.mark.parametrize("method", novelty.FEATURE_METHODS)
def test_detector_round_trips_through_npz(tmp_path, method):
    features, labels = gaussian_classes(20, seed=13)
    detector = novelty.fit_threshold(method, features, labels)
    detector.save(tmp_path / "novelty.npz")
    loaded = novelty.NoveltyDetector.load(tmp_path / "novelty.npz")
    assert loaded.to_dict() == detector.to_dict() and loaded.method == method
    assert set(loaded.state) == set(detector.state)
    queries, _ = gaussian_classes(3, seed=14, offset=2.0)
    np.testing.assert_array_equal(loaded.score(queries), detector.score(queries))
    np.testing.assert_array_equal(loaded.held_out_scores, detector.held_out_scores)
