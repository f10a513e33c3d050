"""Scoring a run's Keras model: a few images eagerly, many through Keras' traced predict function,
the same numbers either way."""

import numpy as np
import pytest

from transfer.outputs.artifacts import Run
from transfer.evaluation.scorers import KerasScorer


def test_a_few_images_are_scored_eagerly_and_agree_with_the_traced_function(digits_run, digits_dir):
    paths = sorted(str(p) for p in digits_dir.rglob("*.png"))[:20]
    few = KerasScorer(Run.open(digits_run))
    eager = dict(few.score_files(paths[:KerasScorer.EAGER_IMAGES], batch_size=4))
    assert few.scoring.predict_function is None, "a few images: no predict function traced"
    many = KerasScorer(Run.open(digits_run))
    traced = dict(many.score_files(paths, batch_size=4))
    assert many.scoring.predict_function is not None
    for path, scores in eager.items():
        np.testing.assert_allclose(scores.probabilities, traced[path].probabilities, rtol=1e-5, atol=1e-6)
        assert scores.novelty == pytest.approx(traced[path].novelty, abs=1e-3)  # float32 distances near 0
    np.testing.assert_allclose(np.sum([s.probabilities for s in traced.values()], axis=1), 1, atol=1e-5)


def test_a_savedmodel_export_names_a_bad_image_with_the_runs_reason(digits_run, digits_dir, tmp_path):
    """`serve` answers with `score_encoded`'s reason: the export's was a bare "Graph execution error:"."""
    import pytest
    from typer.testing import CliRunner

    from transfer.cli import app
    from transfer.core.errors import BadImageError
    from transfer.evaluation.scorers import SavedModelScorer, load_scorer

    exported = CliRunner().invoke(app, ["export", str(digits_run), "--out", str(tmp_path / "export")])
    assert exported.exit_code == 0, exported.output
    run, export = load_scorer(digits_run), load_scorer(tmp_path / "export")
    assert isinstance(export, SavedModelScorer)
    good = next(digits_dir.rglob("*.png")).read_bytes()
    bad = {
        "a cut PNG": good[: len(good) // 2],
        "a PNG header then noise": good[:16] + bytes(range(256)) * 4,
        "a PDF": b"%PDF-1.7 not an image",
        "nothing": b"",
    }
    for what, content in bad.items():
        reasons = []
        for scorer in (run, export):
            with pytest.raises(BadImageError) as raised:
                scorer.score_encoded([good, content])
            reasons.append((raised.value.index, raised.value.reason))
        assert reasons[0] == reasons[1], what
        assert reasons[0][0] == 1 and "Graph execution" not in reasons[0][1] and reasons[0][1], what
