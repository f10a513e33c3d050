"""Filters, feature maps and Grad-CAM."""

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from transfer.models.registry import get_backbone
from transfer.models.classifier import build_classifier
from transfer.cli import app
from transfer.reports.visualize import grad_cam

runner = CliRunner()


@pytest.mark.parametrize("backbone", ["resnet50", "lenet"])
def test_grad_cam_gives_unit_heatmaps_at_input_size(backbone):
    spec = get_backbone(backbone)
    size = 96 if spec.pretrained else 32  # ResNet50's maps are 3x3 at 96 (1x1 at 32)
    keras.utils.set_random_seed(0)
    model = build_classifier(spec, num_classes=3, image_size=size, weights=None)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    heatmaps = grad_cam(model, spec.name, spec.pretrained, pixels, [0, 2])
    assert heatmaps.shape == (2, size, size)
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1 + 1e-6 and heatmaps.max() > 0


@pytest.mark.slow
def test_visualize_writes_filters_and_feature_maps(digits_run, tmp_path):
    result = runner.invoke(app, ["visualize", str(digits_run), "--layers", "c1,c3", "--out", str(tmp_path / "vis")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == [".transfer.json", "feature_maps_c1.png", "feature_maps_c3.png", "filters.png"]
    bad = runner.invoke(app, ["visualize", str(digits_run), "--layers", "conv9", "--out", str(tmp_path / "vis2")])
    assert bad.exit_code == 2 and "conv9 is not a layer of lenet" in bad.output


def test_first_layer_filters_of_bgr_backbones_are_shown_in_rgb_order():
    from transfer.reports.visualize import first_layer_filters

    layer = keras.layers.Conv2D(1, 2)
    layer.build((None, 4, 4, 3))
    kernel = np.zeros((2, 2, 3, 1), np.float32)
    kernel[:, :, 0, 0] = 1.0  # the first input channel of a caffe-mode backbone is blue
    layer.kernel.assign(kernel)
    (image,), _ = first_layer_filters(layer, bgr=True)
    assert image[..., 2].min() == 1 and image[..., :2].max() == 0
    (image,), _ = first_layer_filters(layer, bgr=False)
    assert image[..., 0].min() == 1
