"""The ground floor: user-facing errors and the one-line option check, the progress reporter the
command line passes in, every value an option may take (`choices`), which optional extra brings which
module (`extras`), and the version. Imports nothing of the project outside `transfer.core`, and no
TensorFlow.
"""
