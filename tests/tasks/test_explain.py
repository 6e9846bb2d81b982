"""Grad-CAM (``emzoo.tasks.explain.grad_cam``) points at what drives the value, eager and scripted."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="Grad-CAM needs torch")

from emzoo.tasks.explain import _eager_forward, _script_forward, grad_cam, overlay_rgb  # noqa: E402


class BrightSpots(torch.nn.Module):
    """Counts bright pixels: a fixed positive 3x3 conv, ReLU above a threshold, global sum."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.fill_(1 / 9)
            self.conv.bias.fill_(-0.5)
        self.act = torch.nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x)).sum(dim=(2, 3))


def image_with_a_spot() -> torch.Tensor:
    x = torch.zeros(1, 1, 48, 64)
    x[..., 8:14, 40:48] = 1.0
    return x


@pytest.mark.parametrize("script", [False, True])
def test_the_map_lights_up_where_the_value_comes_from(script):
    net = BrightSpots().eval()
    forward = _script_forward(torch.jit.script(net)) if script else _eager_forward(net)
    cam, element, value, layer = grad_cam(
        forward, image_with_a_spot(), output_index=0, element=None, layer=None
    )
    assert cam.shape == (48, 64) and cam.max() == pytest.approx(1.0)
    with torch.no_grad():
        assert value == pytest.approx(float(net(image_with_a_spot())[0].max()), rel=1e-5)
    assert element in (0, 1)
    assert "aten::relu" in layer if script else layer == "act"
    inside = cam[8:14, 40:48].mean()
    outside = np.delete(
        cam.reshape(-1), np.ravel_multi_index(np.mgrid[6:16, 38:50].reshape(2, -1), cam.shape)
    )
    assert inside > 0.5 and outside.max() < 0.05


def test_named_layer_and_unknown_layer():
    from emzoo.errors import UsageError

    forward = _eager_forward(BrightSpots().eval())
    cam, *_, layer = grad_cam(forward, image_with_a_spot(), output_index=0, element=1, layer="conv")
    assert layer == "conv" and cam.shape == (48, 64)
    with pytest.raises(UsageError, match="no spatial feature map named 'head'"):
        grad_cam(forward, image_with_a_spot(), output_index=0, element=0, layer="head")
    with pytest.raises(UsageError, match="has 2 values"):
        grad_cam(forward, image_with_a_spot(), output_index=0, element=5, layer=None)


def test_overlay_colours_only_where_the_map_is_high():
    grey = np.tile(np.linspace(0, 255, 32, dtype=np.float32), (16, 1))
    cam = np.zeros((16, 32), np.float32)
    cam[4:8, 4:8] = 1.0
    rgb = overlay_rgb(grey, cam)
    assert rgb.shape == (16, 32, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 0] == rgb[0, 0, 1] == rgb[0, 0, 2]  # grey where the map is 0
    assert not rgb[5, 5, 0] == rgb[5, 5, 1] == rgb[5, 5, 2]
