"""What to label next (`transfer.metrics.acquisition`) on arrays whose answer is known, and `transfer suggest`."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from transfer.metrics.acquisition import next_to_label

runner = CliRunner()


def _blobs(sizes, seed=0):
    """Tight 2-D blobs far apart, `sizes` points each: `(points, blob of each point, centres)`."""
    rng = np.random.default_rng(seed)
    centres = np.array([[10.0, 0.0], [0.0, 10.0], [-10.0, 0.0], [0.0, -10.0]])[: len(sizes)]
    points = np.vstack([c + rng.normal(0, 0.5, (s, 2)) for c, s in zip(centres, sizes)])
    return points, np.repeat(np.arange(len(sizes)), sizes), centres


def _most_typical(members: np.ndarray) -> int:
    """Index (into `members`) of the highest 1 / mean distance to its min(20, m - 1) nearest others, by loops."""
    k = min(20, len(members) - 1)
    best, best_score = -1, -1.0
    for i, x in enumerate(members):
        others = sorted(float(np.linalg.norm(x - y)) for j, y in enumerate(members) if j != i)
        score = 1.0 / np.mean(others[:k])
        if score > best_score:
            best, best_score = i, score
    return best


def test_typiclust_takes_the_most_typical_point_of_each_cluster_largest_first():
    points, blob, _ = _blobs([40, 30, 20, 10])
    picks = next_to_label(points, np.zeros((0, 2)), np.zeros(0, int), 4, strategy="typiclust", seed=1)
    assert [blob[p.index] for p in picks] == [0, 1, 2, 3]  # every cluster, the largest first
    for pick in picks:
        members = np.flatnonzero(blob == blob[pick.index])
        unit = points[members] / np.linalg.norm(points[members], axis=1, keepdims=True)  # TypiClust's L2-normalized space
        assert pick.index == members[_most_typical(unit)]
        assert pick.reason == f"representative: centre of an unlabelled cluster of {len(members)}"
        assert pick.suggested is None  # nothing labelled: no suggestion


def test_typiclust_leaves_the_clusters_already_labelled():
    points, blob, _ = _blobs([40, 30, 20, 10])
    labelled = points[[0, 45]] + 0.01  # one label in each of the two largest blobs
    picks = next_to_label(points, labelled, np.array([0, 1]), 2, strategy="typiclust", seed=0, suggest=False)
    assert sorted(blob[p.index] for p in picks) == [2, 3]


def _symmetric_labelled():
    """Class 0 at x = -1, -2 and class 1 at x = 1, 2, each at y = +-10: the head's boundary is x = 0."""
    xs = np.array([-1.0, -2.0, -1.0, -2.0, 1.0, 2.0, 1.0, 2.0])
    ys = np.array([10.0, 10.0, -10.0, -10.0, 10.0, 10.0, -10.0, -10.0])
    return np.column_stack([xs, ys]), (xs > 0).astype(int)


def test_margin_picks_the_points_nearest_the_boundary():
    labelled, labels = _symmetric_labelled()
    rng = np.random.default_rng(0)
    pool = np.column_stack([rng.uniform(-3, 3, 60), rng.choice([-10.0, 10.0], 60)])
    picks = next_to_label(pool, labelled, labels, 5, strategy="margin", classes=["ants", "bees"])
    assert [p.index for p in picks] == list(np.argsort(np.abs(pool[:, 0]))[:5])
    first = picks[0]
    assert first.kind == "uncertain" and first.reason.startswith("uncertain: margin 0.")
    assert first.reason.endswith("between ants and bees") or first.reason.endswith("between bees and ants")
    assert first.suggested == int(pool[first.index, 0] > 0) and 0.5 <= first.confidence < 0.6


def test_auto_is_representative_first_then_uncertain_and_not_redundant():
    labelled, labels = _symmetric_labelled()
    # Near the boundary: 3 points at the top, then 5 at the bottom; far from it, 20 more.
    near = np.array([[0.01, 10], [0.02, 10], [0.03, 10], [0.04, -10], [0.05, -10], [0.06, -10], [0.07, -10], [0.08, -10]])
    far = np.column_stack([np.linspace(1.5, 3, 20) * np.resize([1, -1], 20), np.resize([10.0, -10.0], 20)])
    pool = np.vstack([near, far])
    labelled, labels = np.tile(labelled, (6, 1)), np.tile(labels, 6)  # 24 a class, 63% of the images: labels enough
    margin = next_to_label(pool, labelled, labels, 2, strategy="margin")
    auto = next_to_label(pool, labelled, labels, 2, strategy="auto", classes=["ants", "bees"])
    assert [p.index for p in margin] == [0, 1]  # both at the top: redundant
    assert [p.index for p in auto] == [0, 3]  # the least certain of each region
    few = next_to_label(pool, labelled[:2], labels[:2], 2, strategy="auto", classes=["ants", "bees"])
    assert {p.kind for p in few} == {"representative"}  # one class labelled: cover the pool first
    some = next_to_label(pool, labelled[:8], labels[:8], 2, strategy="auto", classes=["ants", "bees"])
    assert {p.kind for p in some} == {"representative"}  # 4 a class: under 20 a class, and under 25% of the 36 images
    share = next_to_label(pool, labelled[:16], labels[:16], 2, strategy="auto", classes=["ants", "bees"])
    assert [p.index for p in share] == [0, 3]  # 8 a class, but 36% of the 44 images: a small pool is covered


def test_random_is_a_seeded_order_of_distinct_images_and_bad_input_is_refused():
    pool = np.arange(20.0).reshape(10, 2)
    picks = next_to_label(pool, np.zeros((0, 2)), np.zeros(0, int), 10, strategy="random", seed=3)
    assert sorted(p.index for p in picks) == list(range(10)) and {p.reason for p in picks} == {"random"}
    assert [p.index for p in picks] == list(np.random.default_rng(3).permutation(10))
    with pytest.raises(ValueError, match="unknown strategy 'entropy'"):
        next_to_label(pool, np.zeros((0, 2)), np.zeros(0, int), 1, strategy="entropy")
    with pytest.raises(ValueError, match=r"labelled features \(3, 4\): expected \[N, D\] and \[M, D\]"):
        next_to_label(pool, np.zeros((3, 4)), np.zeros(3, int), 1)


def test_suggest_leaves_out_what_is_labelled_and_lists_what_it_cannot_read(digits_run, digits_dir, tmp_path):
    """A project labelled with 2 digits of each of 3 classes, extracting features with the digits run."""
    from transfer.cli import app

    photos = tmp_path / "photos"
    for digit in ("0", "1", "2"):
        (photos / digit).mkdir(parents=True)
        for source in sorted((digits_dir / digit).iterdir())[:15]:
            shutil.copy(source, photos / digit / source.name)
    (photos / "broken.png").write_bytes(b"not a png")
    labelled = [sorted((photos / d).iterdir())[i] for d in ("0", "1", "2") for i in (0, 1)]
    project = tmp_path / "project"
    project.mkdir()
    (project / "labels.csv").write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in labelled))
    (project / "project.json").write_text(f'{{"model": "{digits_run}", "classes": ["0", "1", "2"]}}')
    out = tmp_path / "next.csv"
    result = runner.invoke(app, ["suggest", str(project), str(photos), "--n", "4", "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "broken.png" in result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "path,suggested_label,confidence,reason" and len(lines) == 5
    rows = list(csv.reader(lines[1:]))
    assert not {row[0] for row in rows} & {str(p) for p in labelled}
    assert all(row[3].startswith("representative: ") for row in rows)  # 2 labels a class: still few
    assert all(row[1] in ("0", "1", "2") and 0 < float(row[2]) <= 1 for row in rows)
    again = runner.invoke(app, ["suggest", str(project), str(photos), "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output and out.read_text().splitlines() == lines
    # A run's own images are labelled already (by path, or by content under another name): only a new photo is left.
    from tests.helpers import write_png

    new = tmp_path / "new"
    (new / "3").mkdir(parents=True)
    for source in sorted((digits_dir / "3").iterdir())[:10]:
        shutil.copy(source, new / "3" / source.name)
    shutil.copy(sorted((digits_dir / "4").iterdir())[0], new / "copy.png")
    write_png(new / "fresh.png", color=(250, 10, 200))
    result = runner.invoke(app, ["suggest", str(digits_run), str(new), "--out", str(tmp_path / "run.csv"), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run.csv").read_text().splitlines()[1].startswith(f"{new / 'fresh.png'},")
    assert len((tmp_path / "run.csv").read_text().splitlines()) == 2 and "11 already labelled" in result.output
