"""timm and Hugging Face checkpoints against the real implementations (docs/checkpoint_families.md).

timm: committed fixtures made by timm itself (tests/make_timm_fixtures.py), and the same comparison live where
`import timm` works (the `torch` test extra; CI installs it). Hugging Face: live with transformers (same extra).
Every parameter is perturbed, so default init values cannot hide a conversion bug; float32 at highest precision.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evalkit import checkpoints
from evalkit.checkpoints import fit
from evalkit.checkpoints.layouts import timm as timm_layout
from evalkit.models import vit

import make_timm_fixtures as fixtures  # tests/ is on the path (conftest.py lives there)
from conftest import FIXTURES

TIMM_DIR = os.path.join(FIXTURES, "timm")
MANIFEST = json.load(open(os.path.join(TIMM_DIR, "manifest.json"), encoding="utf-8"))
TOL = 5e-5


@pytest.fixture(autouse=True)
def _highest_precision():
  with jax.default_matmul_precision("highest"):
    yield


def _timm_cases():
  for case in MANIFEST["cases"]:
    sizes = [fixtures.TINY["img_size"]] + ([case["run_size"]] if case["run_size"] else [])
    for size in sizes:
      yield pytest.param(case, size, id=f"{case['name']}-{size}")


def _apply(model, params, x_nchw):
  logits, out = model.apply({"params": params}, jnp.asarray(x_nchw.transpose(0, 2, 3, 1)))
  return np.asarray(logits), {k: np.asarray(v) for k, v in out.items()}


def _load_timm(path, case, size):
  kw = fixtures.kwargs_of(case["kwargs"])
  del kw["img_size"]  # the checkpoint's own resolution is in its posemb; image_size is the one to run at
  return checkpoints.load_timm(path, case["arch"], image_size=(size, size), **kw)


def _check_timm(model, params, ref, size):
  logits, out = _apply(model, params, fixtures.inputs(size))
  np.testing.assert_allclose(out["encoded"], ref["tokens"], atol=TOL, rtol=0)
  np.testing.assert_allclose(out["head_input"], ref["pooled"], atol=TOL, rtol=0)
  if "logits" in ref:
    np.testing.assert_allclose(logits, ref["logits"], atol=TOL, rtol=0)


@pytest.mark.parametrize("case,size", _timm_cases())
def test_timm_fixture_outputs(case, size):
  stored = np.load(os.path.join(TIMM_DIR, f"{case['name']}_outputs.npz"))
  ref = {k.split("/", 1)[1]: stored[k] for k in stored.files if k.startswith(f"{size}/")}
  model, params = _load_timm(os.path.join(TIMM_DIR, f"{case['name']}.safetensors"), case, size)
  _check_timm(model, params, ref, size)


@pytest.mark.parametrize("case,size", _timm_cases())
def test_timm_live(case, size, tmp_path):
  pytest.importorskip("timm", exc_type=ImportError)  # the `torch` test extra (BUILD.md)
  from safetensors.torch import save_file  # pylint: disable=import-outside-toplevel
  state, results = fixtures.build_case(case["arch"], case["kwargs"], case["run_size"], case["seed"] + 100)
  save_file(state, str(tmp_path / "model.safetensors"))
  model, params = _load_timm(tmp_path / "model.safetensors", case, size)
  _check_timm(model, params, results[str(size)], size)


def test_timm_architecture_defaults_by_name():
  dino = timm_layout.architecture("vit_small_patch14_reg4_dinov2.lvd142m").vit_kwargs()
  assert (dino["width"], dino["depth"], dino["num_heads"], dino["patch_size"]) == (384, 12, 6, (14, 14))
  assert dino["num_registers"] == 4 and dino["layer_scale"] == 1e-5 and dino["mlp_act"] == "gelu"
  siglip = timm_layout.architecture("vit_so400m_patch14_siglip_384").vit_kwargs()
  assert (siglip["width"], siglip["mlp_dim"], siglip["pool_type"], siglip["class_token"]) == (1152, 4304, "map",
                                                                                            False)
  clip = timm_layout.architecture("vit_base_patch16_clip_quickgelu_224").vit_kwargs()
  assert clip["pre_norm"] and not clip["patch_bias"] and clip["ln_eps"] == 1e-5 and clip["mlp_act"] == "quick_gelu"
  # timm counts 85,798,656 for vit_base_patch16_224 without head; its class token's posemb row (768) lives in `cls`.
  base = timm_layout.architecture("vit_base_patch16_224", num_classes=0).model()
  assert vit.param_count(base) == 85_798_656 - 768
  with pytest.raises(checkpoints.CheckpointError, match="unknown timm architecture"):
    timm_layout.architecture("resnet50")
  with pytest.raises(checkpoints.CheckpointError, match="not supported"):
    timm_layout.architecture("vit_base_patch16_224", qk_norm=True)


def test_timm_state_dict_that_does_not_fit_gets_the_ingestion_report():
  case = next(c for c in MANIFEST["cases"] if c["name"] == "dinov2")
  path = os.path.join(TIMM_DIR, "dinov2.safetensors")
  kw = {k: v for k, v in fixtures.kwargs_of(case["kwargs"]).items() if k != "img_size"}
  with pytest.raises(checkpoints.CheckpointError, match=r"unexpected \[blocks\.0\.ls1\.gamma") as err:
    checkpoints.load_timm(path, "vit_base_patch16_224", **kw)  # no layer scale in a plain ViT
  assert "\n" not in str(err.value)
  with pytest.raises(checkpoints.CheckpointError, match=r"missing \[blocks\.2\.norm1\.weight"):
    checkpoints.load_timm(path, case["arch"], **{**kw, "depth": 3})
  with pytest.raises(checkpoints.CheckpointError, match="mis-shaped"):
    checkpoints.load_timm(path, case["arch"], **{**kw, "embed_dim": 32})


def test_truncated_and_foreign_safetensors_fail_in_one_line(tmp_path):
  data = open(os.path.join(TIMM_DIR, "gap.safetensors"), "rb").read()
  (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
  (tmp_path / "junk.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
  for name, why in (("cut", "truncated"), ("junk", "corrupt")):
    with pytest.raises(checkpoints.CheckpointError, match=why) as err:
      checkpoints.load_timm(tmp_path / f"{name}.safetensors", "vit_base_patch16_gap_224")
    assert "\n" not in str(err.value)


def test_bfloat16_safetensors_read_without_torch(tmp_path):
  import ml_dtypes  # pylint: disable=import-outside-toplevel
  from evalkit.checkpoints.formats.safetensors import read_safetensors  # pylint: disable=import-outside-toplevel
  torch = pytest.importorskip("torch")
  from safetensors.torch import save_file  # pylint: disable=import-outside-toplevel
  t = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 7
  save_file({"a": t.to(torch.bfloat16), "b": t}, str(tmp_path / "x.safetensors"))
  flat = read_safetensors(tmp_path / "x.safetensors")
  assert flat["a"].dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(flat["a"].astype(np.float32), t.to(torch.bfloat16).float().numpy())
  np.testing.assert_array_equal(flat["b"], t.numpy())


@pytest.mark.parametrize("method,antialias", [("bicubic", False), ("bicubic_antialias", True)])
def test_posemb_resize_matches_torch_interpolate(method, antialias):
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  for side, new in [(4, (6, 6)), (7, (3, 5)), (16, (37, 37)), (37, (24, 24)), (14, (14, 20))]:
    pe = rng.normal(size=(1, side * side, 8)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(pe.reshape(1, side, side, 8)).permute(0, 3, 1, 2),
                                          size=new, mode="bicubic", align_corners=False, antialias=antialias)
    ref = ref.permute(0, 2, 3, 1).reshape(1, -1, 8).numpy()
    np.testing.assert_allclose(fit.resample_posemb(pe, new, method), ref, atol=2e-5, rtol=0)


# --- Hugging Face transformers, live -------------------------------------------------------------------------------
_HF_KW = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)


def _hf_models():
  t = pytest.importorskip("transformers")
  vit_kw = dict(_HF_KW, intermediate_size=48)
  return {
      "vit": lambda: t.ViTModel(t.ViTConfig(**vit_kw)),
      "vit_classifier": lambda: t.ViTForImageClassification(t.ViTConfig(**vit_kw, num_labels=5)),
      "dinov2": lambda: t.Dinov2Model(t.Dinov2Config(**_HF_KW, mlp_ratio=2)),
      "dinov2_swiglu": lambda: t.Dinov2Model(t.Dinov2Config(**_HF_KW, use_swiglu_ffn=True)),
      "siglip_vision": lambda: t.SiglipVisionModel(t.SiglipVisionConfig(**vit_kw)),
      "siglip_full": lambda: t.SiglipModel(t.SiglipConfig(
          vision_config=vit_kw, text_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                 intermediate_size=16, vocab_size=50))),
      "clip_vision": lambda: t.CLIPVisionModel(t.CLIPVisionConfig(**vit_kw)),
  }


@pytest.mark.parametrize("size", [32, 48])
@pytest.mark.parametrize("kind", ["vit", "vit_classifier", "dinov2", "dinov2_swiglu", "siglip_vision", "siglip_full",
                                  "clip_vision"])
def test_hf_save_pretrained_outputs(kind, size, tmp_path):
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  model = _hf_models()[kind]().eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.2 * torch.randn_like(p))
  model.save_pretrained(tmp_path)
  ours, params = checkpoints.load_hf(tmp_path, image_size=(size, size))
  x = fixtures.inputs(size)
  tower = model.vision_model if kind == "siglip_full" else model
  with torch.no_grad():
    ref = tower(torch.from_numpy(x), interpolate_pos_encoding=size != 32)
  logits, out = _apply(ours, params, x)
  if kind == "vit_classifier":
    np.testing.assert_allclose(logits, ref.logits.numpy(), atol=TOL, rtol=0)
    return
  np.testing.assert_allclose(out["encoded"], ref.last_hidden_state.numpy(), atol=TOL, rtol=0)
  np.testing.assert_allclose(out["pre_logits"], ref.pooler_output.numpy(), atol=TOL, rtol=0)


def test_hf_foreign_or_pickled_directory_is_refused(tmp_path):
  (tmp_path / "config.json").write_text('{"model_type": "bert"}')
  with pytest.raises(checkpoints.CheckpointError, match="model_type 'bert'"):
    checkpoints.load_hf(tmp_path)
  (tmp_path / "config.json").write_text('{"model_type": "vit"}')
  (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
  with pytest.raises(checkpoints.CheckpointError, match="never loads"):
    checkpoints.load_hf(tmp_path)


# --- End to end: `evalkit eval` of a timm file and a Hugging Face directory, then the leaderboard -----------------
@pytest.mark.slow
def test_eval_timm_and_hf_checkpoints_on_digits_then_leaderboard(tmp_path, data_dir):
  import shutil  # pylint: disable=import-outside-toplevel
  from conftest import run_cli  # pylint: disable=import-outside-toplevel
  results = tmp_path / "results"
  common = ["--tasks=digits", f"--data_dir={data_dir}", f"--results_dir={results}",
            f"--cache_dir={tmp_path / 'cache'}", "--progress=false", "--loo=false"]
  proc = run_cli("eval", f"--checkpoint={os.path.join(TIMM_DIR, 'dinov2.safetensors')}",
                 "--timm_model=vit_small_patch14_dinov2", "--timm_kwargs=embed_dim=24,depth=2,num_heads=2,patch_size=8",
                 *common)
  assert proc.returncode == 0, proc.stderr[-2000:]
  record = json.loads((results / "dinov2" / "digits.json").read_text())
  described = record["checkpoint"]
  assert described["format"] == "timm" and described["architecture"] == "timm vit_small_patch14_dinov2"
  assert described["posemb_resize"] == "bicubic_antialias"  # 4x4 posemb grid resampled to digits' 3x3
  assert described["model"]["layer_scale"] == 1e-5 and described["model"]["mlp_act"] == "gelu"
  ten_shot = record["metrics"]["10shot"]["value"]
  assert 0.2 < ten_shot < 1.0  # a random tiny network: well above chance (10%) on digits, below perfect

  transformers = pytest.importorskip("transformers")
  hf_dir = tmp_path / "hf_vit"
  config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                                  image_size=32, patch_size=8)
  transformers.ViTModel(config).save_pretrained(hf_dir)
  proc = run_cli("eval", f"--checkpoint={hf_dir}", "--name=hf_vit", *common)
  assert proc.returncode == 0, proc.stderr[-2000:]
  hf_record = json.loads((results / "hf_vit" / "digits.json").read_text())
  assert hf_record["checkpoint"]["format"] == "hf" and hf_record["checkpoint"]["posemb_resize"] == "bicubic"

  # Beside an evalkit-trained checkpoint (a committed record of the pre-training stage's digits_tiny run).
  shutil.copytree(os.path.join(FIXTURES, "results_v1", "digits_tiny_step_60"),
                  results / "digits_tiny_step_60")
  proc = run_cli("report", f"--results_dir={results}", f"--out={tmp_path / 'report'}", "--bootstrap_samples=20")
  assert proc.returncode == 0, proc.stderr[-2000:]
  board = (tmp_path / "report" / "leaderboard.md").read_text()
  for name in ("dinov2", "hf_vit", "digits_tiny_step_60"):
    assert name in board
  assert f"{100 * ten_shot:.1f}" in board
