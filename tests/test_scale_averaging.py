"""Scale averaging: the chip magnified about its centre on a ramp whose answer is known, the averaged code on a
hand-computed case, bad scales, a training batch's random scales, and MICAModule's read-out and prediction
over the views."""

from functools import partial

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from faceregen.encoders.identity_encoder import build_identity_encoder
from faceregen.encoders.mapping_network import MappingNetwork
from faceregen.encoders.scale_averaging import ScaleAveraging, rescale
from lightning_modules.mica_module import MICAModule


def ramp(width: int = 8) -> torch.Tensor:
    """(1, 1, W, W) images whose pixel (i, j) holds its column's centre in normalised coordinates,
    ``u_j = (2 j + 1) / W - 1`` (-7/8 ... 7/8 for W = 8)."""
    u = (2 * torch.arange(width, dtype=torch.float64) + 1) / width - 1
    return u.expand(1, 1, width, width).clone()


def test_rescale_magnifies_about_the_centre():
    """Magnified by s, pixel j shows what lay at u_j / s: a linear ramp becomes u / s (bilinear sampling is
    exact on it, and s >= 1 samples inside the image); s = 1 gives the chip back."""
    image = ramp()
    u = image[0, 0, 0]
    for s in (1.0, 1.25, 2.0):
        out = rescale(image, torch.tensor([s]))
        np.testing.assert_allclose(out[0, 0].numpy(), (u / s).expand(8, 8).numpy(), atol=1e-12)
    # shrunk (s < 1) the border pixels repeat beyond the chip's edge: the ramp's end values
    out = rescale(image, torch.tensor([0.5]))[0, 0, 0]
    assert out[0].item() == pytest.approx(u[0].item()) and out[-1].item() == pytest.approx(u[-1].item())


def test_scale_averaging_on_a_hand_computed_case():
    """A predictor reading the ramp's last column: 7/8 as aligned, 7/16 magnified 2x; their mean 21/32."""
    averaging = ScaleAveraging([1.0, 2.0])
    codes = averaging(lambda x: x[:, 0, :1, -1], ramp())
    np.testing.assert_allclose(codes.numpy(), [[21 / 32]], atol=1e-12)


@pytest.mark.parametrize("scales", [[], [0.0, 1.0], [1.0, 1.0]])
def test_bad_scales_are_refused(scales):
    with pytest.raises(ValueError, match="chip_scales"):
        ScaleAveraging(scales)


def test_a_training_batch_takes_each_chip_at_one_scale():
    """Each of 32 chips comes back as one of its views, and more than one scale is drawn."""
    averaging = ScaleAveraging([0.9, 1.0, 1.1])
    images = torch.from_numpy(np.random.default_rng(0).normal(size=(32, 3, 12, 12)))
    torch.manual_seed(0)
    out = averaging.random_rescale(images)
    views = averaging.views(images)
    picked = [next(k for k, view in enumerate(views) if torch.allclose(out[i], view[i], atol=1e-12)) for i in range(32)]
    assert len(set(picked)) > 1


def test_the_module_reads_out_every_view(toy_model):
    """With three chip scales the closed-form read-out learns from three rows per training image, and the
    fitted module's code is the mean of the three views' codes (flip averaging off)."""
    torch.manual_seed(0)
    module = MICAModule(
        identity_encoder=build_identity_encoder("dlib_resnet", pretrained=None, freeze="all", feature_stages=[0], feature_grid=1),
        mapping_network=partial(MappingNetwork, hidden_dim=None, hidden_layers=0),
        face_model=toy_model, region_weights={"face": 1.0}, optimizer=partial(torch.optim.Adam, lr=1e-3),
        readout_init="ridge", chip_scales=[0.9, 1.0, 1.1],
    ).eval()
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (40, 3, 150, 150), dtype=np.uint8))
    heads = torch.from_numpy(toy_model.vertices_mm(rng.normal(size=(40, toy_model.n_components))).astype(np.float32))
    items = [{"image": images[i], "vertices_mm": heads[i]} for i in range(40)]
    assert module.readout_statistics(DataLoader(items[:30], batch_size=10)).count == 90
    module.fit_readout(DataLoader(items[:30], batch_size=10), DataLoader(items[30:], batch_size=10))
    with torch.no_grad():
        inputs = module.identity_encoder.normalize_input(images[30:])
        views = [module._code_of_input(rescale(inputs, torch.full((10,), s))) for s in (0.9, 1.0, 1.1)]
        np.testing.assert_allclose(module.encode(images[30:]).numpy(), torch.stack(views).mean(0).numpy(), rtol=1e-4, atol=1e-5)
        assert (views[0] - views[2]).abs().max() > 1e-3  # the views differ: the mean is not any one of them
