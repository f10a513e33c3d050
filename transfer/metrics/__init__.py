"""Numbers computed from arrays: temperature scaling and the calibration error, multi-label thresholds
and scores, the logistic fit of `--head logistic`, and the probe's transferability scores (linear
probe, LogME). NumPy, pandas and scikit-learn only; imports `transfer.core` and nothing else of the
project.
"""
