"""The networks: the one registry of backbones (`registry`), backbones from elsewhere (a Keras model file,
a keras-hub preset: `external`), the LeNet-5 / AlexNet baselines, the new head, the full classifier
(pixels to probabilities, freezing and unfreezing), the ImageNet classifier as it comes, and loading a
saved classifier (`saving`). Imports `core`, `metrics`, `outputs` and `data`.
"""
