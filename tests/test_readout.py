"""The linear read-out in closed form: a known linear map is recovered, a good prior is kept, statistics
pool and standardise exactly and survive a file, and MICAModule's read-out predicts heads that are a linear
function of its own features, alone or pooled with a base stage's statistics."""

from functools import partial

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from torch.utils.data import DataLoader

from faceregen.encoders.identity_encoder import build_identity_encoder
from faceregen.encoders.mapping_network import MappingNetwork
from faceregen.encoders.readout import RELATIVE_ALPHAS, ReadoutStatistics, fit_ridge_readout
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
    readout = fit_ridge_readout(ReadoutStatistics.of(x, codes), val_x, val_face, basis, mean)
    # noise-free: the weakest ridge wins, and the result is the normal equations' solution at that alpha
    xc, zc = x - x.mean(0), codes - codes.mean(0)
    alpha = RELATIVE_ALPHAS[0] * (xc**2).sum() / x.shape[1]
    assert readout.alpha == pytest.approx(alpha)
    np.testing.assert_allclose(readout.weights, np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ zc), atol=1e-9)
    np.testing.assert_allclose(readout.weights, weights, rtol=0.01, atol=0.01)
    np.testing.assert_allclose(readout.bias, bias, atol=0.01)
    assert readout.val_face_mm < 0.05


def test_the_held_out_error_is_taken_after_a_rigid_fit():
    """Held-out faces each moved by a known rigid motion (a 20 degree turn about a random axis, 15 mm away):
    the read-out is still the known map, and its held-out error, taken after the rigid fit, is ~0 where the
    raw distance is the motion's."""
    rng, weights, bias, basis, mean, x, val_x, val_face = linear_problem()
    axes = rng.normal(size=(len(val_x), 3))
    rotations = Rotation.from_rotvec(np.radians(20.0) * axes / np.linalg.norm(axes, axis=1, keepdims=True)).as_matrix()
    shifts = rng.normal(size=(len(val_x), 3))
    moved = np.einsum("nij,nfj->nfi", rotations, val_face) + (15.0 * shifts / np.linalg.norm(shifts, axis=1, keepdims=True))[:, None]
    readout = fit_ridge_readout(ReadoutStatistics.of(x, x @ weights + bias), val_x, moved, basis, mean)
    np.testing.assert_allclose(readout.weights, weights, rtol=0.01, atol=0.01)
    assert readout.val_face_mm < 0.05
    assert np.linalg.norm(moved - val_face, axis=-1).mean() > 15.0


def test_uninformative_training_codes_keep_a_good_prior():
    """Codes unrelated to the features: the held-out images choose a strong ridge that keeps the prior."""
    rng, weights, _, basis, mean, x, val_x, val_face = linear_problem()
    noise_codes = rng.normal(size=(len(x), weights.shape[1])) * 3
    # the prior's bias is re-estimated from the training codes' mean, so give them the true mean
    _, _, bias, *_ = linear_problem()
    noise_codes += bias - noise_codes.mean(axis=0)
    readout = fit_ridge_readout(ReadoutStatistics.of(x, noise_codes), val_x, val_face, basis, mean, prior_weights=weights)
    mean_eigenvalue = ((x - x.mean(0)) ** 2).sum() / x.shape[1]
    assert readout.alpha > 99 * mean_eigenvalue
    assert np.abs(readout.weights - weights).max() < 0.05 * np.abs(weights).max()
    without_prior = fit_ridge_readout(ReadoutStatistics.of(x, noise_codes), val_x, val_face, basis, mean)
    assert readout.val_face_mm < 0.2 * without_prior.val_face_mm


def test_pooled_and_standardised_statistics_equal_those_of_the_joined_images(tmp_path):
    """Two sets with different means pool into the statistics of their concatenation; standardising the
    statistics equals computing them on standardised features; a saved file reads back (the feature scatter
    in float32) and a file of something else is refused by name."""
    rng = np.random.default_rng(1)
    x_a, x_b = rng.normal(size=(40, 6)), rng.normal(size=(25, 6)) * 2 + 5
    z_a, z_b = rng.normal(size=(40, 3)), rng.normal(size=(25, 3)) - 4
    joined = ReadoutStatistics.of(np.concatenate([x_a, x_b]), np.concatenate([z_a, z_b]))
    pooled = ReadoutStatistics.of(x_a, z_a).pooled(ReadoutStatistics.of(x_b, z_b))
    assert pooled.count == 65
    for name in ("feature_mean", "code_mean", "feature_scatter", "cross_scatter"):
        np.testing.assert_allclose(getattr(pooled, name), getattr(joined, name), atol=1e-10)
    mean, scale = rng.normal(size=6), rng.uniform(0.5, 2, size=6)
    direct = ReadoutStatistics.of((np.concatenate([x_a, x_b]) - mean) / scale, np.concatenate([z_a, z_b]))
    for name in ("feature_mean", "feature_scatter", "cross_scatter"):
        np.testing.assert_allclose(getattr(joined.standardized(mean, scale), name), getattr(direct, name), atol=1e-10)
    joined.save(tmp_path / "statistics.npz")
    loaded = ReadoutStatistics.load(tmp_path / "statistics.npz")
    assert loaded.count == 65
    np.testing.assert_allclose(loaded.feature_scatter, joined.feature_scatter, rtol=1e-6)
    np.testing.assert_array_equal(loaded.cross_scatter, joined.cross_scatter)
    np.savez(tmp_path / "other.npz", count=np.int64(3), feature_mean=np.zeros(4))
    with pytest.raises(ValueError, match="other.npz"):
        ReadoutStatistics.load(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="cannot pool"):
        joined.pooled(ReadoutStatistics.of(x_a[:, :5], z_a))


def test_ridge_from_pooled_statistics_is_the_ridge_on_both_sets():
    """The read-out fitted on two sets' pooled statistics is the normal equations' solution on their
    concatenated features (no prior), at the chosen alpha."""
    _, weights, bias, basis, mean, x, val_x, val_face = linear_problem(n=200, d=12)
    rng = np.random.default_rng(2)
    codes = x @ weights + bias + rng.normal(size=(len(x), weights.shape[1])) * 0.5
    half = 120
    pooled = ReadoutStatistics.of(x[:half], codes[:half]).pooled(ReadoutStatistics.of(x[half:], codes[half:]))
    readout = fit_ridge_readout(pooled, val_x, val_face, basis, mean)
    xc, zc = x - x.mean(0), codes - codes.mean(0)
    solved = np.linalg.solve(xc.T @ xc + readout.alpha * np.eye(x.shape[1]), xc.T @ zc)
    np.testing.assert_allclose(readout.weights, solved, atol=1e-9)
    np.testing.assert_allclose(readout.bias, codes.mean(0) - x.mean(0) @ solved, atol=1e-9)


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


def test_module_read_out_pools_the_base_statistics(toy_model, tmp_path):
    """A base stage's statistics (:meth:`MICAModule.readout_statistics` on other images) pooled with the
    training images': the module's read-out is the ridge fitted on both sets' standardised features
    together, and it predicts heads linear in the features although the training images alone are fewer
    than the features' dimensions. Without ``readout_init`` the statistics are refused."""
    def module(**kwargs):
        return MICAModule(
            identity_encoder=build_identity_encoder("dlib_resnet", pretrained=None, freeze="all", feature_stages=[0], feature_grid=1),
            mapping_network=partial(MappingNetwork, hidden_dim=None, hidden_layers=0),
            face_model=toy_model, region_weights=REGION_WEIGHTS, optimizer=partial(torch.optim.Adam, lr=1e-3), **kwargs,
        )

    torch.manual_seed(0)
    base = module(readout_init="ridge").eval()
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (180, 3, 150, 150), dtype=np.uint8))
    with torch.no_grad():
        pooled = base.identity_encoder.pooled_stages(base.identity_encoder.normalize_input(images)).numpy()
    codes = (pooled - pooled.mean(0)) / pooled.std(0) @ rng.normal(size=(pooled.shape[1], toy_model.n_components)) * 0.3
    heads = torch.from_numpy(toy_model.vertices_mm(codes).astype(np.float32))
    items = [{"image": images[i], "vertices_mm": heads[i]} for i in range(len(images))]
    base_items, train, val = items[:140], DataLoader(items[140:160], batch_size=20), DataLoader(items[160:], batch_size=20)
    base.readout_statistics(DataLoader(base_items, batch_size=35)).save(tmp_path / "readout_statistics.npz")

    finetuned = module(readout_init="ridge", base_statistics=str(tmp_path / "readout_statistics.npz"))
    finetuned.identity_encoder.load_state_dict(base.identity_encoder.state_dict())
    finetuned.fit_readout(train, val)
    finetuned.eval()
    with torch.no_grad():
        after = (finetuned(images[160:]) - heads[160:]).norm(dim=-1).mean().item()
    assert after < 0.1

    standardizer = finetuned.identity_encoder.feature_standardizer
    scale = np.sqrt(standardizer.running_var.double().numpy() + standardizer.eps)
    np.testing.assert_allclose(standardizer.running_mean.numpy(), pooled[140:160].mean(0), rtol=1e-5, atol=1e-6)
    x = (pooled[:160] - standardizer.running_mean.double().numpy()) / scale
    z = np.concatenate([finetuned._best_fit_codes(heads[:140].numpy()), finetuned._best_fit_codes(heads[140:160].numpy())])
    weights = finetuned.mapping_network.output.weight.detach().double().numpy().T
    xc = x - x.mean(0)
    # the fitted weights satisfy the ridge normal equations on the joined set for some alpha in the grid
    residuals = [np.abs((xc.T @ xc + relative * np.trace(xc.T @ xc) / x.shape[1] * np.eye(x.shape[1])) @ weights
                        - xc.T @ (z - z.mean(0))).max() for relative in RELATIVE_ALPHAS]
    assert min(residuals) < 1e-3 * np.abs(xc.T @ (z - z.mean(0))).max()

    with pytest.raises(ValueError, match="readout_init"):
        module(base_statistics=str(tmp_path / "readout_statistics.npz"))
