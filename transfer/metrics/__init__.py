"""Numbers computed from arrays: temperature scaling and the calibration error, multi-label thresholds
and scores, the logistic fit of `--head logistic`, and the probe's transferability scores (linear
probe, LogME), the label-noise model of the audit, and novelty scores for images outside the classes
(`novelty`: KNN, Mahalanobis, energy, max-softmax, with a threshold set on held-out folds). NumPy, pandas and scikit-learn only; imports `transfer.core` and nothing else of the
project.
"""
