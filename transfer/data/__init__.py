"""Where images come from and how they reach a model: class folders and CSV manifests listed
(`sources`), checked, de-duplicated and split (`folders`), the one image decoder and the in-model
`Preprocess` layer (`preprocessing`), the `tf.data` pipelines (`pipeline`) and the augmentation layers.
Imports `core`, `metrics` and `outputs`.
"""
