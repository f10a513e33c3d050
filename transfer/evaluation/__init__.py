"""Using a model: scoring images with each kind of model in its own runtime (`scorers`: Keras, the
SavedModel, LiteRT, ONNX Runtime), `transfer predict` (`prediction`) and `transfer evaluate`
(`evaluate`). Imports the packages below it, up to `training`.
"""
