"""The linear read-out in closed form: a known linear map is recovered, a good prior is kept, and
MICAModule's read-out predicts heads that are a linear function of its own features."""

from functools import partial

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from faceregen.encoders.identity_encoder import build_identity_encoder
from faceregen.encoders.mapping_network import MappingNetwork
from faceregen.encoders.readout import RELATIVE_ALPHAS, fit_ridge_readout
from lightning_modules.mica_module import MICAModule

REGION_WEIGHTS = {"face": 150.0}


def linear_problem(n=300, d=12, k=4, f=40, seed=0):
    rng = np.random.default_rng(seed)
    weights, bias = rng.normal(size=(d, k)), rng.normal(size=k)
    basis, mean = rng.normal(size=(f, 3, k)), rng.normal(size=(f, 3)) * 50
    x, val_x = rng.normal(size=(n, d)), rng.normal(size=(n // 3, d))
    val_face = np.einsum("fck,nk->nfc", basis, val_x @ weights + bias) + mean
    return rng, weights, bias, basis, mean, x, val_x, val_face


def test_a_known_linear_map_is_recovered():
    _, weights, bias, basis, mean, x, val_x, val_face = linear_problem()
    codes = x @ weights + bias
    readout = fit_ridge_readout(x, codes, val_x, val_face, basis, mean)
    # noise-free: the weakest ridge wins, and the result is the normal equations' solution at that alpha
    xc, zc = x - x.mean(0), codes - codes.mean(0)
    alpha = RELATIVE_ALPHAS[0] * (xc**2).sum() / x.shape[1]
    assert readout.alpha == pytest.approx(alpha)
    np.testing.assert_allclose(readout.weights, np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ zc), atol=1e-9)
    np.testing.assert_allclose(readout.weights, weights, rtol=0.01, atol=0.01)
    np.testing.assert_allclose(readout.bias, bias, atol=0.01)
    assert readout.val_face_mm < 0.05


def test_uninformative_training_codes_keep_a_good_prior():
    """Codes unrelated to the features: the held-out images choose a strong ridge that keeps the prior."""
    rng, weights, _, basis, mean, x, val_x, val_face = linear_problem()
    noise_codes = rng.normal(size=(len(x), weights.shape[1])) * 3
    # the prior's bias is re-estimated from the training codes' mean, so give them the true mean
    _, _, bias, *_ = linear_problem()
    noise_codes += bias - noise_codes.mean(axis=0)
    readout = fit_ridge_readout(x, noise_codes, val_x, val_face, basis, mean, prior_weights=weights)
    mean_eigenvalue = ((x - x.mean(0)) ** 2).sum() / x.shape[1]
    assert readout.alpha > 99 * mean_eigenvalue
    assert np.abs(readout.weights - weights).max() < 0.05 * np.abs(weights).max()
    without_prior = fit_ridge_readout(x, noise_codes, val_x, val_face, basis, mean)
    assert readout.val_face_mm < 0.2 * without_prior.val_face_mm


def test_module_read_out_fits_heads_linear_in_its_features(toy_model):
    """Heads built from a linear map of the encoder's own pooled features: after ``fit_readout`` the module
    (eval mode, through its standardisation and mapping network) predicts them within 0.05 mm."""
    torch.manual_seed(0)
    module = MICAModule(
        identity_encoder=build_identity_encoder("dlib_resnet", pretrained=None, freeze="all", feature_stages=[0], feature_grid=1),
        mapping_network=partial(MappingNetwork, hidden_dim=None, hidden_layers=0),
        face_model=toy_model,
        region_weights=REGION_WEIGHTS,
        optimizer=partial(torch.optim.Adam, lr=1e-3),
        readout_init="ridge",
    ).eval()
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (120, 3, 150, 150), dtype=np.uint8))
    with torch.no_grad():
        pooled = module.identity_encoder.pooled_stages(module.identity_encoder.normalize_input(images)).numpy()
    standardized = (pooled - pooled.mean(0)) / pooled.std(0)
    codes = standardized @ rng.normal(size=(pooled.shape[1], toy_model.n_components)) * 0.3
    heads = torch.from_numpy(toy_model.vertices_mm(codes).astype(np.float32))
    items = [{"image": images[i], "vertices_mm": heads[i]} for i in range(len(images))]
    train, val = DataLoader(items[:90], batch_size=30), DataLoader(items[90:], batch_size=30)
    before = (module(images[90:]) - heads[90:]).norm(dim=-1).mean().item()
    module.fit_readout(train, val)
    with torch.no_grad():
        after = (module(images[90:]) - heads[90:]).norm(dim=-1).mean().item()
    assert before > 1.0
    assert after < 0.05
    assert int(module.identity_encoder.feature_standardizer.num_batches_tracked) == 1


def test_fixed_features_keep_their_standardisation_in_training():
    """Frozen tapped stages: train() leaves the standardisation in eval mode, so a training batch is
    standardised as validation (and the closed-form read-out) sees it; trainable stages use batch statistics."""
    fixed = build_identity_encoder("dlib_resnet", pretrained=None, freeze="mica", feature_stages=[1], feature_grid=2)
    trained = build_identity_encoder("dlib_resnet", pretrained=None, freeze="none", feature_stages=[1], feature_grid=2)
    assert fixed.features_fixed and not trained.features_fixed
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 3, 150, 150), dtype=np.uint8))
    x = fixed.normalize_input(images)
    with torch.no_grad():
        evaluated = fixed.eval()(x)
        assert torch.equal(fixed.train()(x), evaluated)
    assert trained.train().feature_standardizer.training
