"""How likely each given label is wrong, from out-of-fold probabilities: what lets the audit flag
only what it can back, rank it, and say how many of its flags it expects to be real label errors.

**The model.** Out-of-fold probabilities `p` say which class an image looks like, to a model that
never saw it; a weak model is unsure (or wrongly sure) of many images whose label is right. Two
numbers are fitted to them together, by maximum likelihood of the given labels:

- a temperature `T` (`q = softmax(log p / T)`): how much sharper or softer `p` should be (a model
  trained from scratch is often overconfident; a regularized logistic regression often too soft);
- a noise rate `e`: the share of labels that are a uniformly random other class, whatever the image.

The likelihood of image i's given label y is `(1 - e) q_iy + e / (K - 1) (1 - q_iy)`. A weak model's
own mistakes are spread over every level of confidence and are absorbed by a softer `T`; wrong labels
are given labels that the model is sure against, which only `e` explains.

**The chance a label is wrong** (Bayes' rule under that model):
`w_i = e / (K - 1) (1 - q_iy) / ((1 - e) q_iy + e / (K - 1) (1 - q_iy))`.
A flag needs `w_i >= TARGET_PRECISION`; with K classes that asks for `q_iy` under about
`e / (K - 1)`: a weak (calibrated, hence unsure) model rarely gets there. The flags are ranked by
`w`, and the **estimated precision** of a list is the mean of its `w` (the expected share of real
label errors in it); the expected number of wrong labels in the data is the sum of every `w`.

**Too weak to judge**: where the out-of-fold accuracy is closer to guessing the largest class than
to being right (`accuracy < (chance + 1) / 2`), its probabilities cannot tell a wrong label from its
own mistakes: nothing is flagged.

**Training without the flags** is advised only where removing them is likely to help: the estimated
precision is at least `ADVISE_PRECISION` (two real errors removed for each right label lost) and
the flags are at most `ADVISE_SHARE` of the images (what is left still represents every class).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A label is flagged where the estimated chance that it is wrong reaches this.
TARGET_PRECISION = 0.5
#: Training on `clean.csv` is advised only at this estimated precision or more ...
ADVISE_PRECISION = 2 / 3
#: ... and where the flags are at most this share of the images.
ADVISE_SHARE = 0.20
#: The noise rate is searched in [NOISE_FLOOR, 1 - 1/K]: never quite zero, never beyond random labels.
NOISE_FLOOR = 1e-4


@dataclass(frozen=True)
class NoiseModel:
    """`temperature`, `noise_rate` (estimated share of wrong labels), `wrong` (each image's chance
    that its given label is wrong), `judged` (False: the model is too weak to judge, `why` says so)."""

    temperature: float
    noise_rate: float
    wrong: np.ndarray
    judged: bool
    why: str


def chance_wrong(probabilities: np.ndarray, labels: np.ndarray, temperature: float, noise_rate: float) -> np.ndarray:
    """Each image's probability that its given label is wrong (the module's `w`)."""
    k = probabilities.shape[1]
    q = _sharpen(probabilities, temperature)[np.arange(len(labels)), labels]
    flip = noise_rate / (k - 1) * (1 - q)
    return flip / ((1 - noise_rate) * q + flip)


def fit(probabilities: np.ndarray, labels: np.ndarray) -> NoiseModel:
    """The temperature and noise rate of largest likelihood (the module's model), and each `w`."""
    from scipy.optimize import minimize

    k = probabilities.shape[1]
    ceiling = 1 - 1 / k

    def loss(theta):
        temperature, rate = np.exp(theta[0]), NOISE_FLOOR + (ceiling - NOISE_FLOOR) / (1 + np.exp(-theta[1]))
        q = _sharpen(probabilities, temperature)[np.arange(len(labels)), labels]
        return -np.sum(np.log((1 - rate) * q + rate / (k - 1) * (1 - q) + 1e-300))

    starts = [(0.0, -3.0), (0.0, 0.0), (1.0, -3.0), (-1.0, -3.0)]
    best = min((minimize(loss, start, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 4000})
                for start in starts), key=lambda result: result.fun)
    temperature = float(np.exp(best.x[0]))
    rate = float(NOISE_FLOOR + (ceiling - NOISE_FLOOR) / (1 + np.exp(-best.x[1])))
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
    chance = float(np.bincount(labels, minlength=k).max() / len(labels))
    judged = accuracy >= (chance + 1) / 2
    why = "" if judged else (
        f"the out-of-fold accuracy {accuracy:.3f} is closer to guessing the largest class ({chance:.3f}) than to being "
        f"right, so its disagreements with a label are as likely its own mistakes as wrong labels")
    return NoiseModel(temperature, rate, chance_wrong(probabilities, labels, temperature, rate), judged, why)


def flagged(model: NoiseModel, candidates: np.ndarray) -> np.ndarray:
    """The indices flagged among `candidates` (those confident learning finds): `w >= TARGET_PRECISION`,
    the surest first; none where the model cannot judge."""
    if not model.judged:
        return np.array([], dtype=int)
    candidates = np.asarray(candidates, dtype=int)
    kept = candidates[model.wrong[candidates] >= TARGET_PRECISION]
    return kept[np.argsort(-model.wrong[kept], kind="stable")]


def advice(model: NoiseModel, flags: np.ndarray) -> tuple[bool, str]:
    """`(advise training on clean.csv, the sentence saying why or why not)`."""
    n = len(model.wrong)
    if not model.judged:
        return False, f"Nothing is flagged: {model.why}. A stronger backbone (a pretrained one, or a model file) can judge."
    if not len(flags):
        return False, "Nothing is flagged: no label is more likely wrong than right under the out-of-fold model."
    precision, share = float(model.wrong[flags].mean()), len(flags) / n
    if precision >= ADVISE_PRECISION and share <= ADVISE_SHARE:
        return True, (f"About {precision:.0%} of the flags are expected to be real label errors and they are {share:.0%} of "
                      f"the images: training without them (clean.csv) is likely to help.")
    reasons = [f"only about {precision:.0%} of them are expected to be real label errors"] if precision < ADVISE_PRECISION else []
    if share > ADVISE_SHARE:
        reasons.append(f"they are {share:.0%} of the images (over {ADVISE_SHARE:.0%})")
    return False, (f"Do not drop the flagged images blindly: {' and '.join(reasons)}. Look at each one and fix the "
                   f"labels that are wrong; clean.csv is written but not advised.")


def _sharpen(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.log(np.clip(probabilities, 1e-12, 1)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)
