"""Tests for evalkit.models.vit: shapes, big_vision param names, semantics."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from evalkit.models import vit

TINY = dict(width=32, depth=1, mlp_dim=64, num_heads=2, patch_size=7)


def _images(n=2, size=28, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.uniform(-1, 1, (n, size, size, 3)), jnp.float32)


def _init(model, size=28):
  return model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)))["params"]


def _names(params):
  return set(flatten_dict(params, sep="/"))


def _block_names(i):
  pre = f"Transformer/encoderblock_{i}"
  return {f"{pre}/{n}" for n in _ln("LayerNorm_0") | _ln("LayerNorm_1")
          | _mha("MultiHeadDotProductAttention_0") | _mlp("MlpBlock_0")}


def _ln(pre):
  return {f"{pre}/scale", f"{pre}/bias"}


def _mha(pre):
  return {f"{pre}/{p}/{w}" for p in ("query", "key", "value", "out")
          for w in ("kernel", "bias")}


def _mlp(pre):
  return {f"{pre}/Dense_{i}/{w}" for i in (0, 1) for w in ("kernel", "bias")}


@pytest.mark.parametrize("pool_type,patch", [
    ("gap", 4), ("map", 7), ("tok", 7), ("0", 4), ("none", 7)])
def test_output_shapes_per_pool_type(pool_type, patch):
  model = vit.ViT(10, **{**TINY, "depth": 2, "patch_size": patch},
                  pool_type=pool_type)
  params = _init(model)
  logits, out = model.apply({"params": params}, _images())
  tokens = (28 // patch) ** 2
  seq = tokens + (pool_type == "tok")
  assert out["stem"].shape == (2, tokens, 32)
  assert out["block0"].shape == out["block1"].shape == (2, seq, 32)
  assert out["encoded"].shape == (2, seq, 32)
  pooled = (2, seq, 32) if pool_type == "none" else (2, 32)
  assert out["head_input"].shape == pooled
  assert out["pre_logits"].shape == pooled
  assert logits.shape == out["logits"].shape == pooled[:-1] + (10,)


def test_pooling_semantics():
  images = _images()
  for pool, expect in [("gap", lambda e: e.mean(axis=1)),
                       ("0", lambda e: e[:, 0]), ("tok", lambda e: e[:, 0])]:
    model = vit.ViT(**TINY, pool_type=pool)
    feats, out = model.apply({"params": _init(model)}, images)
    np.testing.assert_allclose(feats, expect(out["encoded"]), atol=1e-6)
    np.testing.assert_array_equal(feats, out["pre_logits"])


def test_param_tree_map_exact_names():
  model = vit.ViT(10, **TINY, pool_type="map")
  expected = ({"embedding/kernel", "embedding/bias", "pos_embedding",
               "head/kernel", "head/bias", "MAPHead_0/probe"}
              | _block_names(0) | _ln("Transformer/encoder_norm")
              | {f"MAPHead_0/{n}" for n in _ln("LayerNorm_0")
                 | _mha("MultiHeadDotProductAttention_0") | _mlp("MlpBlock_0")})
  params = flatten_dict(_init(model), sep="/")
  assert set(params) == expected
  # big_vision shapes: conv kernel HWIO, posemb (1, h*w, D), MHA per-head.
  assert params["embedding/kernel"].shape == (7, 7, 3, 32)
  assert params["pos_embedding"].shape == (1, 16, 32)
  assert params["MAPHead_0/probe"].shape == (1, 1, 32)
  mha = "Transformer/encoderblock_0/MultiHeadDotProductAttention_0"
  assert params[f"{mha}/query/kernel"].shape == (32, 2, 16)
  assert params[f"{mha}/out/kernel"].shape == (2, 16, 32)
  assert params["MAPHead_0/MlpBlock_0/Dense_0/kernel"].shape == (32, 64)


def test_param_tree_tok_exact_names():
  model = vit.ViT(**{**TINY, "depth": 2}, pool_type="tok", rep_size=16)
  expected = ({"embedding/kernel", "embedding/bias", "pos_embedding", "cls",
               "pre_logits/kernel", "pre_logits/bias"}
              | _block_names(0) | _block_names(1)
              | _ln("Transformer/encoder_norm"))
  params = flatten_dict(_init(model), sep="/")
  assert set(params) == expected  # No head without num_classes.
  assert params["cls"].shape == (1, 1, 32)
  assert not np.any(params["cls"])  # Zero-initialised.
  assert params["pre_logits/kernel"].shape == (32, 16)


def test_decode_variant():
  assert vit.decode_variant("S/16") == dict(
      width=384, depth=12, mlp_dim=1536, num_heads=6, patch_size=(16, 16))
  assert vit.decode_variant("B") == dict(width=768, depth=12, mlp_dim=3072,
                                         num_heads=12)
  assert vit.decode_variant("So400m/14")["mlp_dim"] == 4304
  assert vit.decode_variant("G/14")["width"] == 1664
  assert vit.decode_variant(None) == {}
  with pytest.raises(ValueError, match="known sizes: mu, Ti, S, M, B, L"):
    vit.decode_variant("XL/16")
  with pytest.raises(ValueError, match="bad patch"):
    vit.decode_variant("B/x")


def test_vit_constructor_overrides_variant():
  model = vit.ViT(10, variant="B/16", pool_type="map", depth=2, patch_size=8)
  assert (model.width, model.depth, model.mlp_dim, model.num_heads) == (
      768, 2, 3072, 12)
  assert model.patch_size == (8, 8) and model.num_classes == 10
  assert model.pool_type == "map"
  default = vit.ViT()
  assert (default.width, default.depth, default.pool_type) == (768, 12, "gap")
  with pytest.raises(ValueError, match="unknown ViT option"):
    vit.ViT(widht=32)
  with pytest.raises(ValueError, match="pool_type"):
    vit.ViT(pool_type="cls")


def _count(model, exclude=()):
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 224, 224, 3)))
  flat = flatten_dict(shapes["params"], sep="/")
  return sum(int(np.prod(v.shape)) for k, v in flat.items()
             if not k.startswith(exclude))


@pytest.mark.parametrize("variant,paper_millions", [("g/14", 1011),
                                                    ("G/14", 1843)])
def test_paper_parameter_counts(variant, paper_millions):
  # The paper's Table 2 counts the encoder (embedding, posemb, blocks, final
  # LayerNorm); the MAP head adds ~2% on top. Shapes only, nothing allocated.
  model = vit.ViT(variant=variant, pool_type="map")
  body = _count(model, exclude=("MAPHead_0/",))
  assert abs(body / 1e6 - paper_millions) / paper_millions < 0.01
  assert _count(model) > body  # The MAP head exists and is not free.


def test_sincos2d_has_no_posemb_param_and_matches_formula():
  model = vit.ViT(**TINY, posemb="sincos2d")
  assert "pos_embedding" not in _names(_init(model))
  pe = np.asarray(vit.posemb_sincos_2d(3, 5, 32))
  assert pe.shape == (1, 15, 32)
  omega = 1.0 / 10000 ** (np.arange(8) / 7)
  y, x = 2, 3  # Token index y * w + x.
  want = np.concatenate([np.sin(x * omega), np.cos(x * omega),
                         np.sin(y * omega), np.cos(y * omega)])
  np.testing.assert_allclose(pe[0, y * 5 + x], want, atol=1e-6)


def test_rep_size_adds_pre_logits():
  images = _images()
  for rep, dim in [(True, 32), (24, 24)]:
    model = vit.ViT(5, **TINY, rep_size=rep)
    params = _init(model)
    assert params["pre_logits"]["kernel"].shape == (32, dim)
    _, out = model.apply({"params": params}, images)
    assert out["pre_logits"].shape == (2, dim)
    assert np.all(np.abs(out["pre_logits"]) <= 1.0)  # tanh.
    assert params["head"]["kernel"].shape == (dim, 5)
  assert "pre_logits" not in _init(vit.ViT(5, **TINY))


def test_head_zero_init_gives_zero_logits():
  model = vit.ViT(7, **TINY)
  logits, out = model.apply({"params": _init(model)}, _images())
  np.testing.assert_array_equal(logits, np.zeros((2, 7)))
  assert np.any(out["pre_logits"])
  model = vit.ViT(7, **TINY, head_zeroinit=False)
  logits, _ = model.apply({"params": _init(model)}, _images())
  assert np.any(logits)


def test_without_head_returns_pre_logits():
  model = vit.ViT(**TINY, rep_size=True)
  feats, out = model.apply({"params": _init(model)}, _images())
  np.testing.assert_array_equal(feats, out["pre_logits"])
  assert "logits" not in out


def test_stem_is_patch_conv_before_posemb():
  model = vit.ViT(**TINY)
  params = _init(model)
  images = _images()
  _, out = model.apply({"params": params}, images)
  kernel = np.asarray(params["embedding"]["kernel"])
  bias = np.asarray(params["embedding"]["bias"])
  # Token 1 is the patch at rows 0:7, columns 7:14 (row-major token order).
  patch = np.asarray(images[0, 0:7, 7:14, :])
  want = np.einsum("hwc,hwcd->d", patch, kernel) + bias
  np.testing.assert_allclose(out["stem"][0, 1], want, rtol=1e-4, atol=1e-4)


def test_pre_ln_residual_blocks():
  # With the attention output and the MLP output projection zeroed, each
  # pre-LN block is the identity: block0 == stem + posemb.
  model = vit.ViT(**TINY)
  params = jax.tree.map(np.array, _init(model))  # Writable copies.
  block = params["Transformer"]["encoderblock_0"]
  for leaf in ("kernel", "bias"):
    block["MultiHeadDotProductAttention_0"]["out"][leaf] *= 0
    block["MlpBlock_0"]["Dense_1"][leaf] *= 0
  _, out = model.apply({"params": params}, _images())
  np.testing.assert_allclose(out["block0"],
                             out["stem"] + params["pos_embedding"], atol=1e-6)


def test_dropout_only_when_training():
  model = vit.ViT(**TINY, dropout=0.5)
  params = _init(model)
  images = _images()
  a, _ = model.apply({"params": params}, images)
  b, _ = model.apply({"params": params}, images)
  np.testing.assert_array_equal(a, b)
  c, _ = model.apply({"params": params}, images, train=True,
                     rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(a, c)


def test_model_config_round_trip():
  model = vit.ViT(10, variant="S/16", pool_type="map", rep_size=True)
  cfg = vit.model_config(model)
  assert json.loads(json.dumps(cfg)) == cfg
  assert cfg["patch_size"] == [16, 16] and cfg["width"] == 384
  assert cfg["rep_size"] is True
  assert vit.model_config(vit.from_config(cfg)) == cfg
  rebuilt = vit.from_config({"variant": "S/16", "pool_type": "map",
                             "num_classes": 10, "rep_size": True})
  assert vit.model_config(rebuilt) == cfg
  assert vit.describe(model) == ("ViT(S/16, pool_type=map, rep_size=True, "
                                 "num_classes=10)")


def test_posemb_grid():
  assert vit.posemb_grid(224, 16) == (14, 14)
  assert vit.posemb_grid((518, 518), (14, 14)) == (37, 37)
  assert vit.posemb_grid((28, 56), 7) == (4, 8)
