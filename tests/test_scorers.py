"""Scoring a run's Keras model: a few images eagerly, many through Keras' traced predict function,
the same numbers either way."""

import numpy as np

from transfer.artifacts import Run
from transfer.scorers import KerasScorer


def test_a_few_images_are_scored_eagerly_and_agree_with_the_traced_function(digits_run, digits_dir):
    paths = sorted(str(p) for p in digits_dir.rglob("*.png"))[:20]
    few = KerasScorer(Run.open(digits_run))
    eager = dict(few.score_files(paths[:KerasScorer.EAGER_IMAGES], batch_size=4))
    assert few.model.predict_function is None, "a few images: no predict function traced"
    many = KerasScorer(Run.open(digits_run))
    traced = dict(many.score_files(paths, batch_size=4))
    assert many.model.predict_function is not None
    for path, scores in eager.items():
        np.testing.assert_allclose(scores, traced[path], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.sum(list(traced.values()), axis=1), 1, atol=1e-5)
