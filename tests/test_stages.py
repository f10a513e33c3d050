"""What a stage is compiled with."""

import keras
import pytest

from transfer.options import OPTIMIZERS
from transfer.stages import make_optimizer


def test_every_optimizer_the_options_offer_is_built():
    built = {name: make_optimizer(name, 0.05) for name in OPTIMIZERS}
    assert isinstance(built["adam"], keras.optimizers.Adam)
    assert isinstance(built["rmsprop"], keras.optimizers.RMSprop)
    sgd = built["sgd"]
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.9 and sgd.nesterov
    for optimizer in built.values():
        assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(0.05)
