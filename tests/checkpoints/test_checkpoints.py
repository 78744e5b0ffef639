"""Tests for evalkit.checkpoints: formats, fitting, resampling, errors, hash."""
import json
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

import evalkit
from evalkit import checkpoints as ckpts
from evalkit.checkpoints import formats
from evalkit.models import vit

TINY = dict(width=32, depth=1, mlp_dim=64, num_heads=2, patch_size=7)


def _model(num_classes=None, **kw):
  return vit.ViT(num_classes, **{**TINY, **kw})


def _random_params(model, size=28, seed=0):
  """Init params perturbed so that nothing (head, cls) is trivially zero."""
  params = model.init(jax.random.key(seed), jnp.zeros((1, size, size, 3)))
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda a: np.asarray(a) + rng.normal(0, 0.02, a.shape).astype(a.dtype),
      params["params"])


def _images(size=28):
  rng = np.random.default_rng(1)
  return jnp.asarray(rng.uniform(-1, 1, (2, size, size, 3)), jnp.float32)


def _flat(params):
  return flatten_dict(params, sep="/")


def _apply(model, params, size=28):
  return np.asarray(model.apply({"params": params}, _images(size))[0])


def _error(fn, *args, **kw) -> str:
  with pytest.raises(ckpts.CheckpointError) as info:
    fn(*args, **kw)
  msg = str(info.value)
  assert "\n" not in msg, msg
  return msg


def test_npz_round_trip_identical_outputs(tmp_path):
  model = _model(10, pool_type="map")
  params = _random_params(model)
  path = tmp_path / "m.npz"
  ckpts.save_npz(path, params)
  assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # No temp left.
  loaded = evalkit.checkpoints.load_params(str(path), model=model,
                                           image_size=(28, 28))
  assert jax.tree.structure(loaded) == jax.tree.structure(params)
  assert all(a.dtype == np.float32 for a in jax.tree.leaves(loaded))
  np.testing.assert_array_equal(_apply(model, loaded), _apply(model, params))
  assert np.any(_apply(model, loaded))


def test_bfloat16_npz_as_big_vision_writes_it(tmp_path):
  model = _model(pool_type="gap")
  params = _random_params(model)
  flat_bf16 = {k: v.astype(ml_dtypes.bfloat16) for k, v in
               _flat(params).items()}
  path = tmp_path / "bf16.npz"
  np.savez(path, **flat_bf16)
  # The premise: plain numpy hands bfloat16 back as a 2-byte void dtype.
  with np.load(path) as raw:
    assert raw["pos_embedding"].dtype.str == "|V2"
  flat = ckpts.read_npz(path)
  assert flat["pos_embedding"].dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(flat["pos_embedding"].astype(np.float32),
                                flat_bf16["pos_embedding"].astype(np.float32))
  loaded = ckpts.load_params(path, model=model, image_size=28)
  assert loaded["pos_embedding"].dtype == np.float32
  np.testing.assert_array_equal(
      loaded["pos_embedding"], flat_bf16["pos_embedding"].astype(np.float32))


def test_orbax_round_trip_with_meta(tmp_path):
  model = _model(10, pool_type="tok")
  params = _random_params(model)
  meta = {"model": vit.model_config(model), "step": 123}
  path = tmp_path / "ckpt"
  ckpts.save_orbax(path, params, meta)
  assert ckpts.read_checkpoint_meta(path) == meta
  ck = ckpts.load_checkpoint(str(path), model=model, image_size=28)
  assert ck.format == "orbax" and ck.meta == meta
  np.testing.assert_array_equal(_apply(model, ck.params),
                                _apply(model, params))
  # Same weights, same fingerprint, whatever the container.
  ckpts.save_npz(tmp_path / "same.npz", params)
  npz = ckpts.load_checkpoint(tmp_path / "same.npz", model=model,
                              image_size=28)
  assert npz.format == "npz" and npz.meta is None
  assert npz.weights_hash == ck.weights_hash
  assert "already exists" in _error(ckpts.save_orbax, path, params)


def _ramp_posemb(grid, width, cls_row=False):
  """posemb[i, j, d] = (d + 1) * i + 3 * j: linear in both grid axes."""
  i, j = np.mgrid[:grid, :grid]
  pe = (i[..., None] * np.arange(1, width + 1) + 3.0 * j[..., None]
        + np.zeros(width))
  pe = pe.reshape(1, grid * grid, width).astype(np.float32)
  if cls_row:
    pe = np.concatenate([np.full((1, 1, width), 7.0, np.float32), pe], 1)
  return pe


def test_posemb_resampled_when_loading_at_higher_resolution(tmp_path):
  model = _model(pool_type="gap")
  params = _random_params(model)  # 28 px / patch 7 -> 4x4 grid.
  params["pos_embedding"] = _ramp_posemb(4, 32)
  ckpts.save_npz(tmp_path / "m.npz", params)
  loaded = ckpts.load_params(tmp_path / "m.npz", model=model,
                             image_size=(56, 56))
  pe = loaded["pos_embedding"]
  assert pe.shape == (1, 64, 32)
  # Corners map to corners and a linear ramp stays linear: the 8x8 grid is
  # the same plane sampled at i * 3/7.
  i, j = np.mgrid[:8, :8] * (3 / 7)
  want = i[..., None] * np.arange(1, 33) + 3.0 * j[..., None]
  np.testing.assert_allclose(pe.reshape(8, 8, 32), want, rtol=1e-5, atol=1e-4)
  # And the model runs at the new resolution.
  assert _apply(model, loaded, size=56).shape == (2, 32)


def test_resample_posemb_keeps_class_token_row():
  pe = _ramp_posemb(4, 8, cls_row=True)
  out = ckpts.resample_posemb(pe, (8, 8))
  assert out.shape == (1, 65, 8)
  np.testing.assert_array_equal(out[:, 0], pe[:, 0])
  np.testing.assert_allclose(out[0, 1:].reshape(8, 8, 8)[-1, -1],
                             pe[0, -1], rtol=1e-6)
  same = ckpts.resample_posemb(pe, (4, 4))
  np.testing.assert_array_equal(same, pe)
  # 16x16 -> 37x37 as for G/14 at 518 px.
  big = ckpts.resample_posemb(np.ones((1, 256, 4), np.float32), (37, 37))
  assert big.shape == (1, 1369, 4)
  np.testing.assert_allclose(big, 1.0, rtol=1e-6)


def test_truncated_npz_is_a_readable_error(tmp_path):
  model = _model(pool_type="gap")
  path = tmp_path / "cut.npz"
  ckpts.save_npz(path, _random_params(model))
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  msg = _error(ckpts.load_params, path, model=model, image_size=28)
  assert str(path) in msg and "truncated or corrupt" in msg


def test_not_a_checkpoint_and_missing_file(tmp_path):
  model = _model()
  text = tmp_path / "notes.npz"
  text.write_text("these are my notes\n")
  msg = _error(ckpts.load_params, text, model=model, image_size=28)
  assert str(text) in msg and "not an .npz checkpoint" in msg
  npy = tmp_path / "single.npz"
  with open(npy, "wb") as f:
    np.save(f, np.ones(3))
  assert "single array" in _error(ckpts.read_npz, npy)
  missing = tmp_path / "nope.npz"
  msg = _error(ckpts.load_params, missing, model=model)
  assert str(missing) in msg and "no such file" in msg
  empty_dir = tmp_path / "dir"
  empty_dir.mkdir()
  assert "not an orbax checkpoint" in _error(ckpts.load_params, empty_dir,
                                             model=model)


def test_tree_mismatch_is_one_line_naming_every_problem(tmp_path):
  model = _model(1000, pool_type="gap")
  flat = _flat(_random_params(model))
  del flat["Transformer/encoder_norm/scale"]
  flat["cls"] = np.zeros((1, 1, 32), np.float32)
  path = tmp_path / "bad.npz"
  ckpts.save_npz(path, flat)
  target = _model(10, pool_type="gap")
  msg = _error(ckpts.load_params, path, model=target, image_size=28)
  assert msg.startswith(f"checkpoint {path} does not fit ViT(")
  assert "at 28x28" in msg
  assert "missing [Transformer/encoder_norm/scale]" in msg
  assert "unexpected [cls]" in msg
  assert "head/kernel (32, 10) vs (32, 1000)" in msg
  assert "dont_load" in msg  # The hint for the usual head mismatch.


def test_missing_module_is_summarised(tmp_path):
  tok = _model(pool_type="tok")
  path = tmp_path / "tok.npz"
  ckpts.save_npz(path, _random_params(tok))
  msg = _error(ckpts.load_params, path, model=_model(pool_type="map"),
               image_size=28)
  assert "missing [MAPHead_0/* (15)]" in msg and "unexpected [cls]" in msg


def test_dont_load_head_reinitialises_it(tmp_path):
  source = _model(1000, pool_type="map")
  params = _random_params(source)
  ckpts.save_npz(tmp_path / "m.npz", params)
  target = _model(10, pool_type="map")
  loaded = ckpts.load_params(tmp_path / "m.npz", model=target, image_size=28,
                             dont_load=("head/.*",))
  assert loaded["head"]["kernel"].shape == (32, 10)
  assert not np.any(loaded["head"]["kernel"])  # Zero init, from model.init.
  np.testing.assert_array_equal(loaded["MAPHead_0"]["probe"],
                                params["MAPHead_0"]["probe"])
  # A headless model (feature extraction) simply ignores a stored head.
  feats = ckpts.load_params(tmp_path / "m.npz", model=_model(pool_type="map"),
                            image_size=28)
  assert "head" not in feats


def test_weights_hash_stable_and_sensitive(tmp_path):
  model = _model(pool_type="gap")
  params = _random_params(model)
  ckpts.save_npz(tmp_path / "a.npz", params)
  h1 = ckpts.load_checkpoint(tmp_path / "a.npz", model=model,
                             image_size=28).weights_hash
  assert h1 == ckpts.weights_hash(_flat(params))
  # Independent of the resolution the weights are fitted to.
  assert h1 == ckpts.load_checkpoint(tmp_path / "a.npz", model=model,
                                     image_size=56).weights_hash
  # Re-saving what was loaded gives the same hash.
  ckpts.save_npz(tmp_path / "b.npz", ckpts.load_params(
      tmp_path / "a.npz", model=model, image_size=28))
  assert ckpts.weights_hash(ckpts.read_npz(tmp_path / "b.npz")) == h1
  flat = _flat(params)
  flat["embedding/bias"] = flat["embedding/bias"].copy()
  flat["embedding/bias"][3] += 1e-3
  assert ckpts.weights_hash(flat) != h1
  assert len(h1) == 64 and int(h1, 16) >= 0


def test_prefix_selection_and_train_state_unwrapping(tmp_path):
  model = _model(pool_type="gap")
  params = _random_params(model)
  flat = {f"params/img/{k}": v for k, v in _flat(params).items()}
  flat["params/txt/embedding"] = np.ones((5, 3), np.float32)
  flat["opt/state/count"] = np.zeros((), np.int32)
  ckpts.save_npz(tmp_path / "two_tower.npz", flat)
  loaded = ckpts.load_params(f"{tmp_path}/two_tower.npz:params/img",
                             model=model, image_size=28)
  np.testing.assert_array_equal(_apply(model, loaded), _apply(model, params))
  msg = _error(ckpts.read_npz, f"{tmp_path}/two_tower.npz:params/nope")
  assert "no arrays under prefix 'params/nope'" in msg
  # A plain train state {"params": ..., "opt": ...} loads its params.
  state = {f"params/{k}": v for k, v in _flat(params).items()}
  state["opt/state/count"] = np.zeros((), np.int32)
  ckpts.save_npz(tmp_path / "state.npz", state)
  loaded = ckpts.load_params(tmp_path / "state.npz", model=model,
                             image_size=28)
  np.testing.assert_array_equal(_apply(model, loaded), _apply(model, params))


def _to_old_vision_transformer(flat):
  """Rewrites big_vision names to google-research/vision_transformer's."""
  old = {}
  for key, value in flat.items():
    if key.startswith("Transformer/encoderblock_"):
      for new, was in (("MultiHeadDotProductAttention_0",
                        "MultiHeadDotProductAttention_1"),
                       ("LayerNorm_1", "LayerNorm_2"),
                       ("MlpBlock_0", "MlpBlock_3")):
        key = key.replace(f"/{new}/", f"/{was}/")
    old[key] = value
  return old


def test_old_vision_transformer_names_and_cls_posemb(tmp_path):
  model = _model(10, pool_type="tok", depth=2)
  params = _random_params(model)
  flat = _flat(params)
  # Old ViTs concatenated [cls] first and added a (1 + h*w)-row posemb.
  row = np.full((1, 1, 32), 0.5, np.float32)
  old = _to_old_vision_transformer(flat)
  assert "Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel" in old
  old["Transformer/posembed_input/pos_embedding"] = np.concatenate(
      [row, old.pop("pos_embedding")], axis=1)
  old["cls"] = old["cls"] - row
  ckpts.save_npz(tmp_path / "old.npz", old)
  loaded = ckpts.load_params(tmp_path / "old.npz", model=model,
                             image_size=28)
  np.testing.assert_allclose(_apply(model, loaded), _apply(model, params),
                             atol=1e-5)
  names = ckpts.read_flat(tmp_path / "old.npz")
  assert "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/out/bias" \
      in names
  assert not any("LayerNorm_2" in k or "MlpBlock_3" in k for k in names)


def test_inline_map_head_is_moved():
  flat = {"probe": np.zeros((1, 1, 4)), "LayerNorm_0/scale": np.ones(4),
          "MlpBlock_0/Dense_0/bias": np.ones(4), "embedding/bias": np.ones(4),
          "MultiHeadDotProductAttention_0/out/bias": np.ones(4)}
  out = ckpts.canonicalize(flat)
  assert set(out) == {"MAPHead_0/probe", "MAPHead_0/LayerNorm_0/scale",
                      "MAPHead_0/MlpBlock_0/Dense_0/bias", "embedding/bias",
                      "MAPHead_0/MultiHeadDotProductAttention_0/out/bias"}


def test_save_npz_is_atomic_on_failure(tmp_path, monkeypatch):
  path = tmp_path / "m.npz"
  ckpts.save_npz(path, {"a": np.ones(3)})
  with pytest.raises(ValueError, match="not numeric"):
    ckpts.save_npz(path, {"b": np.array([object()])})

  def failing_savez(f, **arrays):
    f.write(b"PK\x03\x04 half a zip")  # A crash in the middle of writing.
    raise OSError("disk full")

  monkeypatch.setattr(np, "savez", failing_savez)
  with pytest.raises(OSError, match="disk full"):
    ckpts.save_npz(path, {"a": np.zeros(3)})
  monkeypatch.undo()
  # The old checkpoint is intact and no temp file is left behind.
  np.testing.assert_array_equal(ckpts.read_npz(path)["a"], np.ones(3))
  assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_damaged_orbax_checkpoint_is_a_short_one_line_error(tmp_path):
  path = tmp_path / "ckpt"
  ckpts.save_orbax(path, {"a": np.ones(3, np.float32)})
  for data_dir in path.glob("d"):
    for f in data_dir.iterdir():
      f.unlink()
  msg = _error(ckpts.read_orbax, path)
  assert str(path) in msg and "cannot restore" in msg and len(msg) < 400


# --- A new format is one module: registered, it is read, built and evaluated with nothing else naming it ---------
# The toy format a user would write in its own module: a directory with one .npy per parameter ("/" in the name
# becomes "."), and arch.json holding the ViT's settings in big_vision's terms, so it needs no model flags.
def _is_npy_dir(directory: str) -> bool:
  return os.path.isfile(os.path.join(directory, "arch.json"))


def _read_npy_dir(spec: str) -> dict:
  return {name[:-len(".npy")].replace(".", "/"): np.load(os.path.join(spec, name), allow_pickle=False)
          for name in sorted(os.listdir(spec)) if name.endswith(".npy")}


def _npy_dir_model(spec: str, options: dict):
  with open(os.path.join(spec, "arch.json"), encoding="utf-8") as f:
    settings = json.load(f)
  return formats.BuiltModel(vit.from_config({**settings, "num_classes": options.get("num_classes")}), "npy directory")


@pytest.fixture()
def npy_dir_format():
  formats.register_format(formats.Format("npy_dir", read=_read_npy_dir, claims_dir=_is_npy_dir,
                                         model_from=_npy_dir_model))
  yield
  del formats.FORMATS["npy_dir"]


def test_a_registered_format_is_evaluated_like_npz(npy_dir_format, random_vit, data_dir, tmp_path):
  """The same weights as a big_vision .npz and in the toy format: same fingerprint, same model, same few-shot
  numbers on digits; the record names the format and where its architecture came from."""
  from evalkit import distributed, evaluate, subjects, tasks  # pylint: disable=import-outside-toplevel
  npz = random_vit(0, "gap")
  npy_dir = tmp_path / "mu7_npy"
  npy_dir.mkdir()
  for name, array in ckpts.read_npz(npz).items():
    np.save(npy_dir / f"{name.replace('/', '.')}.npy", array)
  (npy_dir / "arch.json").write_text(json.dumps({"variant": "mu/7", "pool_type": "gap"}))

  task = tasks.load_task("digits").replace(shots=(5,), seeds=(0,), headline_shots=5)
  settings = evaluate.EvalSettings(data_dir=data_dir, results_dir=str(tmp_path / "results"), progress=False,
                                   loo=False)
  records = {}
  for path, options in ((str(npy_dir), {}), (str(npz), {"variant": "mu/7", "pool_type": "gap"})):
    subject = subjects.resolve_subject(path, model_options=options)
    records[subject.name], _, _ = evaluate.evaluate_task(subject, task, settings, distributed.data_mesh())
  toy, reference = records["mu7_npy"]["checkpoint"], records[os.path.basename(npz)[:-4]]["checkpoint"]
  assert (toy["format"], toy["architecture"]) == ("npy_dir", "npy directory") and reference["format"] == "npz"
  assert toy["weights_hash"] == reference["weights_hash"] and toy["model"] == reference["model"]
  assert records["mu7_npy"]["metrics"] == records[os.path.basename(npz)[:-4]]["metrics"]
  assert 0.2 < records["mu7_npy"]["metrics"]["5shot"]["value"] < 1.0  # a random mu/7 ViT: above chance on digits
