"""transfer: fine-tune ImageNet backbones (or train LeNet-5 / AlexNet baselines) on a folder of images.

The package imports TensorFlow lazily: `transfer.backbones` and `transfer.errors` are cheap, so the
command line answers `--help` at once; the modules that build or run models import Keras themselves.
"""

__version__ = "0.1.0"
