"""Makes the committed timm reference fixtures in tests/fixtures/timm/ (run where `import timm` works).

For each case: a tiny timm VisionTransformer of the named family, every parameter perturbed (so no init value such
as a zero bias or a unit LayerNorm scale can hide a conversion bug), saved the way timm users save one
(`safetensors.torch.save_file(model.state_dict(), ...)`), plus the model's outputs on fixed inputs in float32:
forward_features (tokens), forward_head(pre_logits=True) (pooled) and forward (logits, when it has a head). A case
with `run_size` also has outputs of the same weights at another resolution, loaded the way timm does
(`checkpoint_filter_fn`, which resamples the posemb bicubic with antialiasing).

  python tests/make_timm_fixtures.py [out_dir]

timm imports torchvision: the `torch` test extra installs a matching torch / torchvision pair and timm (BUILD.md).
tests/checkpoints/test_timm_hf.py checks evalkit against these files everywhere and, where timm imports, against timm
live through `build_case`.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

TINY = dict(embed_dim=24, depth=2, num_heads=2, patch_size=8, img_size=32)
# (case name, timm architecture, create_model kwargs beyond TINY, resolution to also run at or None)
CASES = [
    ("augreg", "vit_base_patch16_224", dict(num_classes=5), 48),
    ("deit_avg_fc_norm", "vit_base_patch16_224", dict(global_pool="avg", num_classes=3), None),
    ("deit3", "deit3_small_patch16_224", dict(num_classes=4), None),
    ("gap", "vit_base_patch16_gap_224", dict(num_classes=0), None),
    ("dinov2", "vit_small_patch14_dinov2", dict(num_classes=0), 40),
    ("dinov2_reg4", "vit_small_patch14_reg4_dinov2", dict(num_classes=0), 48),
    ("dinov2_giant_swiglu", "vit_giant_patch14_dinov2", dict(num_classes=0), None),
    ("siglip_map", "vit_base_patch16_siglip_224", dict(num_classes=0), 24),
    ("siglip_gap", "vit_base_patch16_siglip_gap_224", dict(num_classes=0), None),
    ("clip_quickgelu", "vit_base_patch16_clip_quickgelu_224", dict(num_classes=6), None),
]


def kwargs_of(case_kwargs: dict) -> dict:
  return {**TINY, **case_kwargs}


def _perturb(model, seed: int) -> None:
  import torch  # pylint: disable=import-outside-toplevel
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.2 * torch.randn(p.shape, generator=gen))


def _outputs(model, x: np.ndarray) -> dict[str, np.ndarray]:
  import torch  # pylint: disable=import-outside-toplevel
  with torch.no_grad():
    t = torch.from_numpy(x)
    tokens = model.forward_features(t)
    out = {"tokens": tokens.numpy(), "pooled": model.forward_head(tokens, pre_logits=True).numpy()}
    if model.num_classes:
      out["logits"] = model(t).numpy()
  return out


def inputs(size: int) -> np.ndarray:
  """Fixed NCHW float32 inputs at `size` x `size`."""
  return np.random.default_rng(size).normal(size=(2, 3, size, size)).astype(np.float32)


def build_case(arch: str, case_kwargs: dict, run_size: int | None, seed: int):
  """(state_dict, {"<size>": outputs}) of one case, computed by timm itself."""
  import timm  # pylint: disable=import-outside-toplevel
  from timm.models.vision_transformer import checkpoint_filter_fn  # pylint: disable=import-outside-toplevel
  kw = kwargs_of(case_kwargs)
  model = timm.create_model(arch, pretrained=False, **kw).eval()
  _perturb(model, seed)
  state = {k: v.contiguous() for k, v in model.state_dict().items()}
  results = {str(kw["img_size"]): _outputs(model, inputs(kw["img_size"]))}
  if run_size:
    other = timm.create_model(arch, pretrained=False, **{**kw, "img_size": run_size}).eval()
    other.load_state_dict(checkpoint_filter_fn(dict(state), other))
    results[str(run_size)] = _outputs(other, inputs(run_size))
  return state, results


def main(out_dir: str) -> None:
  import timm  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from safetensors.torch import save_file  # pylint: disable=import-outside-toplevel
  torch.backends.cuda.matmul.allow_tf32 = False
  os.makedirs(out_dir, exist_ok=True)
  manifest = {"timm": timm.__version__, "torch": torch.__version__, "tiny": TINY, "cases": []}
  for seed, (name, arch, case_kwargs, run_size) in enumerate(CASES):
    state, results = build_case(arch, case_kwargs, run_size, seed)
    save_file(state, os.path.join(out_dir, f"{name}.safetensors"))
    arrays = {f"{size}/{k}": v for size, outs in results.items() for k, v in outs.items()}
    np.savez_compressed(os.path.join(out_dir, f"{name}_outputs.npz"), **arrays)
    manifest["cases"].append({"name": name, "arch": arch, "kwargs": case_kwargs, "run_size": run_size,
                              "seed": seed})
    print(name, arch, {k: v.shape for k, v in arrays.items()})
  with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=1)


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "fixtures", "timm"))
