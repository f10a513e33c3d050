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
        if method == "rmd_l2":
            # the far cluster is the classes' antipode on the unit sphere, as far from the background
            # Gaussian as from the classes: relative Mahalanobis subtracts what the two share (Ren et
            # al. built it for near novelty); the plain distances above see it
            assert result["out_unknown"] < 0.5, result
            continue
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


def ledoit_wolf(centred: np.ndarray) -> np.ndarray:
    """Ledoit & Wolf (2004)'s shrunk covariance of already centred rows, written out (as above)."""
    n, d = centred.shape
    sample = centred.T @ centred / n
    mu = np.trace(sample) / d
    delta = ((sample - mu * np.eye(d)) ** 2).sum() / d
    beta = sum((((np.outer(x, x) - sample) ** 2).sum() for x in centred)) / d / n ** 2
    shrinkage = min(beta, delta) / delta
    return shrinkage * mu * np.eye(d) + (1 - shrinkage) * sample


def test_class_conditional_knn_is_the_brute_force_kth_neighbour_within_each_class():
    bank, bank_labels = gaussian_classes(12, seed=21)
    queries, _ = gaussian_classes(4, seed=22, offset=1.0)
    unit_bank = bank / np.sqrt((bank ** 2).sum(axis=1))[:, None]
    k = 3
    per_class = []  # [query][class]: the k-th nearest distance among that class's rows
    for query in queries:
        unit = query / np.sqrt((query ** 2).sum())
        per_class.append([sorted(np.sqrt(((unit - row) ** 2).sum()) for row in unit_bank[bank_labels == c])[k - 1]
                          for c in range(3)])
    per_class = np.array(per_class)
    state = novelty.fit_state("knn_class", bank, bank_labels)
    np.testing.assert_allclose(novelty.method_scores("knn_class", state, queries, k=k), per_class.min(axis=1), atol=1e-6)
    logits = np.random.default_rng(23).normal(size=(len(queries), 3))
    predicted = logits.argmax(axis=1)
    np.testing.assert_allclose(novelty.method_scores("knn_predicted", state, queries, logits=logits, k=k),
                               per_class[np.arange(len(queries)), predicted], atol=1e-6)
    # k = 1: the nearest row of the nearest class is the nearest row of all
    np.testing.assert_allclose(novelty.method_scores("knn_class", state, queries, k=1),
                               novelty.knn_scores(novelty.normalise(bank), queries, 1), atol=1e-9)


def test_relative_mahalanobis_is_the_class_distance_less_the_background_distance():
    features, labels = gaussian_classes(30, seed=24)
    queries, _ = gaussian_classes(4, seed=25, offset=2.0)
    for method, transform in (("rmd", lambda x: x), ("rmd_l2", lambda x: x / np.linalg.norm(x, axis=1, keepdims=True))):
        x, q = transform(features), transform(queries)
        means = [x[labels == c].mean(axis=0) for c in range(3)]
        precision = np.linalg.inv(ledoit_wolf(x - np.stack(means)[labels]))
        background = x.mean(axis=0)
        background_precision = np.linalg.inv(ledoit_wolf(x - background))
        expected = [min((v - m) @ precision @ (v - m) for m in means) - (v - background) @ background_precision @ (v - background)
                    for v in q]
        state = novelty.fit_state(method, features, labels)
        np.testing.assert_allclose(novelty.method_scores(method, state, queries), expected, rtol=1e-5, atol=1e-6)


def test_knn_takes_a_given_k():
    features, labels = gaussian_classes(40, seed=26)
    queries, _ = gaussian_classes(3, seed=27, offset=1.0)
    detector = novelty.fit_threshold("knn", features, labels, k=7)
    assert detector.k == 7
    np.testing.assert_allclose(detector.score(queries), novelty.knn_scores(novelty.normalise(features), queries, 7))
    assert novelty.fit_threshold("mahalanobis", features, labels, k=7).k == 0
    with pytest.raises(ValueError, match="k is 0"):
        novelty.fit_threshold("knn", features, labels, k=0)


@pytest.mark.parametrize("method", ["knn_msp", "knn_msp_max"])
def test_combined_score_standardises_knn_and_max_softmax_by_their_held_out_scores(tmp_path, method):
    from sklearn.linear_model import LogisticRegression

    features, labels = gaussian_classes(40, seed=28)
    queries, _ = gaussian_classes(5, seed=29, offset=1.0)

    def logits_of(fit_x, fit_y, score_x):
        return novelty.logits_from_decision(LogisticRegression(max_iter=1000).fit(fit_x, fit_y).decision_function(score_x))

    detector = novelty.fit_threshold(method, features, labels, share=0.1, seed=3, logits_of=logits_of, k=2)
    held_knn = novelty.out_of_fold_scores("knn", features, labels, folds=5, seed=3, k=2)
    held_msp = novelty.out_of_fold_scores("max_softmax", features, labels, folds=5, seed=3, logits_of=logits_of)
    centre = np.array([held_knn.mean(), held_msp.mean()])
    scale = np.array([held_knn.std(), held_msp.std()])
    np.testing.assert_allclose(detector.state["centre"], centre)
    np.testing.assert_allclose(detector.state["scale"], scale)
    together = np.stack([(held_knn - centre[0]) / scale[0], (held_msp - centre[1]) / scale[1]], axis=1)
    held = together.max(axis=1) if method == "knn_msp_max" else together.sum(axis=1)
    np.testing.assert_allclose(detector.held_out_scores, held)
    assert detector.threshold == pytest.approx(np.quantile(held, 0.9))
    logits = logits_of(features, labels, queries)
    knn = novelty.knn_scores(novelty.normalise(features), queries, 2)
    msp = 1 - novelty.softmax(logits).max(axis=1)
    parts = np.stack([(knn - centre[0]) / scale[0], (msp - centre[1]) / scale[1]], axis=1)
    expected = parts.max(axis=1) if method == "knn_msp_max" else parts.sum(axis=1)
    np.testing.assert_allclose(detector.score(queries, logits=logits), expected)
    detector.save(tmp_path / "novelty.npz")
    loaded = novelty.NoveltyDetector.load(tmp_path / "novelty.npz")
    np.testing.assert_array_equal(loaded.score(queries, logits=logits), detector.score(queries, logits=logits))
    with pytest.raises(ValueError, match="needs logits"):
        detector.score(queries)
