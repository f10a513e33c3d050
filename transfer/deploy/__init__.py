"""Taking a model elsewhere: the SavedModel, LiteRT and ONNX exports with their checks (`export`), the
TF Serving REST server and its page (`serving`), and `transfer features`' Parquet table. Imports the
packages below it, up to `evaluation` (never `selection`).
"""
