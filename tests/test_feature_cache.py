"""The identity features' cache: stored views come back bit for bit, new weights or views are computed."""

from __future__ import annotations

import pytest
import torch

from faceregen.encoders import build_identity_encoder
from faceregen.encoders.feature_cache import FeatureCache


class NoisyEncoder:
    """Features that differ on every call (noise): a value that comes back unchanged came from the cache."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, views: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(views))
        return views.flatten(1)[:, :4] + torch.randn(len(views), 4)


def test_a_lookup_computes_only_unseen_views_and_returns_stored_ones_bit_for_bit(tmp_path):
    cache, encoder = FeatureCache(tmp_path), NoisyEncoder()
    views = torch.rand(5, 3, 4, 4)
    first = cache.lookup("encoder_a", views, encoder)
    again = cache.lookup("encoder_a", torch.cat([views[2:], torch.rand(1, 3, 4, 4)]), encoder)
    assert encoder.calls == [5, 1]  # only the new view was computed
    assert torch.equal(again[:3], first[2:])
    assert (cache.hits, cache.misses) == (3, 6)
    # another encoder's fingerprint: nothing is reused, and switching to it wrote encoder_a's new views
    other = cache.lookup("encoder_b", views, encoder)
    assert encoder.calls == [5, 1, 5] and not torch.equal(other, first)
    assert len(list((tmp_path / "encoder_a").glob("*.npz"))) == 1
    cache.flush()
    # a later run reads both folders' files and computes nothing it has seen
    fresh = FeatureCache(tmp_path)
    assert torch.equal(fresh.lookup("encoder_a", views, encoder), first)
    assert torch.equal(fresh.lookup("encoder_b", views, encoder), other)
    assert encoder.calls == [5, 1, 5] and fresh.flush() is None  # nothing new to write


def test_a_damaged_cache_file_is_named(tmp_path):
    (tmp_path / "encoder_a").mkdir()
    (tmp_path / "encoder_a" / "run.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match=r"run\.npz: expected a feature-cache file.*delete it"):
        FeatureCache(tmp_path).lookup("encoder_a", torch.rand(1, 3, 4, 4), NoisyEncoder())


def test_fixed_mid_level_features_come_from_the_cache_until_the_weights_change(tmp_path):
    torch.manual_seed(0)
    encoder = build_identity_encoder("dlib_resnet", pretrained=None, freeze="mica", feature_stages=[1], feature_grid=2)
    x = encoder.normalize_input(torch.randint(0, 256, (3, 3, 150, 150), dtype=torch.uint8))
    with torch.no_grad():
        expected = encoder.pooled_stages(x)
        cache = FeatureCache(tmp_path)
        encoder.use_feature_cache(cache)
        assert torch.equal(encoder.pooled_stages(x), expected) and (cache.hits, cache.misses) == (0, 3)
        assert torch.equal(encoder.train().pooled_stages(x), expected) and (cache.hits, cache.misses) == (3, 3)
        # a flipped view is another key
        assert torch.allclose(encoder.pooled_stages(x.flip(-1)), encoder._computed_pooled_stages(x.flip(-1)))
        assert cache.misses == 6
        # new weights in a tapped stage (another encoder): another folder, computed afresh
        encoder.backbone.stages[1][0].conv1.weight.mul_(2.0)
        changed = encoder.pooled_stages(x)
        assert cache.misses == 9 and not torch.allclose(changed, expected)
        assert torch.equal(changed, encoder._computed_pooled_stages(x))
        # features that train (scratch) never use it
        trainable = build_identity_encoder("dlib_resnet", pretrained=None, freeze="none", feature_stages=[1], feature_grid=2)
        trainable.use_feature_cache(cache)
        trainable.pooled_stages(x)
    assert (cache.hits, cache.misses) == (3, 9)
    with pytest.raises(ValueError, match="feature_stages"):
        build_identity_encoder("dlib_resnet", pretrained=None).use_feature_cache(cache)
