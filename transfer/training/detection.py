"""The end of a training run, before it is published: its open-set detector ("none of these").

`fit_detector` fits `--unknown`'s novelty score (`transfer.metrics.novelty`) on the features of the
final model (`transfer.models.detector`: a backbone's pooled output, fine-tuned or not; a baseline's
flattened feature layer) for the images its final weights were fitted on: the training split, and the
validation split too where the head was refit on every image. Its threshold is set on held-out folds
of those images to answer `unknown` for `--unknown-share` of them. A multi-label run's images are one
group (an image with no label is an in-class image, not a novel one). While the backbone is the frozen
one, the features come from the disk cache the frozen stage filled; else one pass of the final model.
"""

from __future__ import annotations

import numpy as np

from transfer.core.choices import UNKNOWN
from transfer.training.state import RunState


def fit_detector(run: RunState, *, refit: bool):
    """The fitted `NoveltyDetector`, said in one line; `None` with `--unknown off`, or where the images
    are too few to hold some out (said, never a silent default). `refit`: the head saw the
    validation images too (`transfer.training.publish.refitted`)."""
    from transfer.metrics.novelty import TooFewImagesError, check_enough, fit_threshold

    options = run.options
    if options.unknown == "off":
        return None
    if UNKNOWN in run.folder.class_names:
        run.reporter.warning(f"Unknown images: a class is named {UNKNOWN!r}, the answer for images outside the classes, so no "
                             f"detector is recorded; rename that class folder to use one.")
        return None
    paths, labels = _fitted_images(run, refit)
    try:
        check_enough(labels, options.unknown_share)
    except TooFewImagesError as error:
        run.reporter.warning(f"Unknown images: {error}")
        return None
    features = _features(run, paths)
    detector = fit_threshold(options.unknown, features, labels, share=options.unknown_share, seed=options.seed)
    run.reporter.message(
        f"Unknown images: {options.unknown} novelty on {features.shape[1]} features of {len(paths)} training images; "
        f"beyond {detector.threshold:.4g} an image is answered 'unknown' (set on held-out folds to reject "
        f"{options.unknown_share:.0%} of them)."
    )
    return detector


def detector_record(run: RunState, detector) -> dict:
    """What `config.json` says of the detector under `unknown_detector`."""
    if detector is None:
        reason = ("--unknown off" if run.options.unknown == "off" else f"a class is named {UNKNOWN!r}"
                  if UNKNOWN in run.folder.class_names else "too few training images")
        return {"method": None, "reason": reason}
    return {**detector.to_dict(), "images": len(detector.held_out_scores)}


def _fitted_images(run: RunState, refit: bool) -> tuple[list[str], np.ndarray]:
    """The images the final weights were fitted on, and their group for the folds: the class index,
    or one group for a multi-label run."""
    data = run.data
    paths, labels = list(data.train_paths), [np.asarray(data.train_labels)]
    if refit:
        paths += list(data.val_paths)
        labels.append(np.asarray(data.val_labels))
    if run.options.multi_label:
        return paths, np.zeros(len(paths), dtype=int)
    return paths, np.concatenate(labels).astype(int)


def _features(run: RunState, paths: list[str]) -> np.ndarray:
    """The final model's features of `paths`: while the backbone is the frozen one, the frozen stage's
    extractor and its disk cache (`extractor_and_cache`); else one pass of `features_model`, uncached."""
    from transfer.models.detector import features_model
    from transfer.training.features import extract_features, extractor_and_cache

    if run.best_stage in ("logistic", "frozen") and run.options.cache_features:
        model, cache = extractor_and_cache(run.model, run.spec, run.options)
    else:
        model, cache = features_model(run.model, run.spec, run.options.transfers), None
    return extract_features(model, paths, run.options.batch_size or 32, cache=cache, reporter=run.reporter,
                            description="Features for the unknown-image detector")
