"""The documented FLOPs formula against XLA's own count of the compiled forward pass."""
import jax
import jax.numpy as jnp
import pytest

from evalkit.train import flops
from evalkit.models import vit


def xla_flops(model, image_size, batch=2):
  x = jnp.zeros((batch, *image_size, 3))
  params = jax.eval_shape(model.init, jax.random.key(0), x[:1])["params"]
  compiled = jax.jit(lambda p, im: model.apply({"params": p}, im)[0]).lower(params, x).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return cost["flops"] / batch


@pytest.mark.parametrize("kw,size", [
    (dict(variant="Ti/16", pool_type="map", num_classes=1000), (224, 224)),
    (dict(variant="S/16", pool_type="tok", num_classes=10, rep_size=True), (96, 96)),
    (dict(patch_size=7, width=96, depth=4, mlp_dim=384, num_heads=4, pool_type="map", num_classes=10), (28, 28)),
])
def test_formula_matches_xla_cost_analysis(kw, size):
  model = vit.ViT(**kw)
  ours, xla = flops.forward_flops(model, size), xla_flops(model, size)
  # XLA also counts elementwise work (LayerNorm, softmax, GELU), which the formula leaves out by convention.
  assert 0.9 < ours / xla <= 1.0, (ours, xla)


def test_paper_scale_sanity():
  # ViT-B/16 at 224 px is commonly quoted at 17.6 G multiply-adds per image, i.e. ≈ 35 GFLOPs in our convention.
  b16 = flops.forward_flops(vit.ViT(variant="B/16", pool_type="tok", num_classes=1000), (224, 224))
  assert 34e9 < b16 < 36e9
  # Training on 10 images: forward + backward ≈ 3 forwards each, ≈ 1.05 TFLOPs.
  assert 1.0e12 < flops.train_flops(vit.ViT(variant="B/16"), (224, 224), 10) < 1.1e12
