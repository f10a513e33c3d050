"""Every value an option may take, and the defaults chosen from measurements.

The command line offers exactly these lists (as `--backbone` comes from the registry), and
`transfer.training.options` checks against them. This module imports nothing.
"""

#: `adam`, `sgd` (Nesterov momentum 0.9) or `rmsprop` (see `transfer.training.stages.make_optimizer`).
OPTIMIZERS = ("adam", "sgd", "rmsprop")
#: The first stage's defaults for a new head on transferred features (the Keras transfer-learning guide's).
HEAD_OPTIMIZER, HEAD_LEARNING_RATE = "adam", 1e-3
#: The fine-tuning stage's default for a pretrained backbone: the Keras guide's 1e-5, measured on real
#: pretrained features (docs/training.md, "The recipe on real pretrained features": LP-FT at 1e-5 stayed at or
#: above the scikit-learn floor at every size, fine-tuning at 1e-4 fell below it).
FINETUNE_LEARNING_RATE = 1e-5
#: Which random flips augmentation uses; `none` for digits or text, whose mirror image is another.
FLIPS = ("horizontal", "vertical", "horizontal_and_vertical", "none")
#: `auto` weights the loss by scikit-learn's balanced class weights.
CLASS_WEIGHTS = ("none", "auto")
#: The new head: a dense softmax layer trained by gradient descent, or scikit-learn's multinomial
#: logistic regression fitted on the pooled features (the same layer, fitted in closed form).
HEADS = ("dense", "logistic")
#: Learning rate over a stage's steps (see `transfer.training.schedules`): `constant`; `cosine` decay to 1% of
#: the rate; `onecycle`, fastai's one cycle (a quarter of the steps warming up from rate / 25).
SCHEDULES = ("constant", "cosine", "onecycle")
#: Each stage's default schedule, chosen from measurements (docs/training.md, "The small-data recipe"): a
#: constant rate trained the new head and the baselines from scratch to clearly better accuracy
#: than cosine decay or one cycle in this tool's short stages; fine-tuning showed no clear winner
#: and keeps cosine.
DEFAULT_SCHEDULES = {"frozen": "constant", "finetune": "cosine", "scratch": "constant"}
#: After training, `temperature` fits one temperature on the validation split and builds it into the
#: model (`transfer.metrics.calibration`); `none` leaves the probabilities as trained.
CALIBRATIONS = ("temperature", "none")
#: The open-set detector `train` records (`--unknown`, `transfer.metrics.novelty`): a novelty score in
#: the model's feature space, its threshold set on held-out folds; `off` records none. `knn` is the
#: default: the one that answered every blank and noise image unknown in docs/evaluate.md's measurement.
UNKNOWN_DETECTORS = ("knn", "mahalanobis_l2", "mahalanobis", "off")
#: The answer for an image outside the classes or below `--min-confidence` (`transfer.evaluation.prediction`):
#: a class of that name would be ambiguous, so a run with one records no detector.
UNKNOWN = "unknown"
#: The share of in-class images the threshold answers `unknown` (`--unknown-share`).
UNKNOWN_SHARE = 0.02
#: `transfer export --format`, and LiteRT's `--quantize` (see `transfer.deploy.export`).
EXPORT_FORMATS = ("savedmodel", "litert", "onnx")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
#: The largest input side: 4.5x what the ImageNet backbones were trained at; a batch of 32 at this
#: size already needs about 400 MB for the pixels alone.
MAX_IMAGE_SIZE = 1024
DEFAULT_BACKBONE = "resnet50"
#: Stage 1's epochs when `--epochs` is not given.
DEFAULT_EPOCHS = 10
#: Images per step per replica at most (beyond, a batch of the smallest images no longer fits in memory).
MAX_BATCH_SIZE = 65536


def default_batch_size(num_train: int) -> int:
    """32 images a step, fewer on small data so that an epoch is at least 10 steps, but not under 8.

    A few hundred images at 32 a step make an epoch of a handful of steps, and a 30-epoch stage
    too few for its learning-rate schedule: LeNet-5 on 160 `shapes` images went from 0.69 to 0.90
    validation accuracy at 16 a step (docs/benchmarks.md, "Baselines that learn").
    """
    return max(8, min(32, num_train // 10))
