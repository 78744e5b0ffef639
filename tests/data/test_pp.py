"""Tests for evalkit.data.pp against independent per-pixel reference loops."""

import io
import math

import numpy as np
import pytest
from PIL import Image

from evalkit.data import pp
from evalkit.data.pp import resize


# --- Straightforward references, written from the TF kernels' definitions ----


def ref_bilinear(img, oh, ow):
  """TF2 half-pixel bilinear, one output pixel at a time, float32."""
  h, w, c = img.shape
  sy, sx = np.float32(h) / np.float32(oh), np.float32(w) / np.float32(ow)
  out = np.zeros((oh, ow, c), np.float32)
  for y in range(oh):
    fy = (np.float32(y) + np.float32(0.5)) * sy - np.float32(0.5)
    y0 = math.floor(fy)
    ly = np.float32(fy - np.float32(y0))
    ya, yb = max(y0, 0), min(math.ceil(fy), h - 1)
    for x in range(ow):
      fx = (np.float32(x) + np.float32(0.5)) * sx - np.float32(0.5)
      x0 = math.floor(fx)
      lx = np.float32(fx - np.float32(x0))
      xa, xb = max(x0, 0), min(math.ceil(fx), w - 1)
      for ch in range(c):
        tl, tr = np.float32(img[ya, xa, ch]), np.float32(img[ya, xb, ch])
        bl, br = np.float32(img[yb, xa, ch]), np.float32(img[yb, xb, ch])
        top = tl + (tr - tl) * lx
        bot = bl + (br - bl) * lx
        out[y, x, ch] = top + (bot - top) * ly
  return out


def ref_area(img, oh, ow):
  """Exact box-overlap average, computed in float64."""
  h, w, c = img.shape
  sy, sx = h / oh, w / ow
  out = np.zeros((oh, ow, c))
  for y in range(oh):
    for x in range(ow):
      y0, y1, x0, x1 = y * sy, (y + 1) * sy, x * sx, (x + 1) * sx
      acc = np.zeros(c)
      for i in range(int(math.floor(y0)), int(math.ceil(y1))):
        wy = min(i + 1, y1) - max(i, y0)
        for j in range(int(math.floor(x0)), int(math.ceil(x1))):
          wx = min(j + 1, x1) - max(j, x0)
          acc += wy * wx * img[min(i, h - 1), min(j, w - 1)]
      out[y, x] = acc / (sy * sx)
  return out


def ref_nearest(img, oh, ow):
  h, w, _ = img.shape
  out = np.zeros((oh, ow, img.shape[2]), img.dtype)
  for y in range(oh):
    for x in range(ow):
      sy = min(int(math.floor((y + 0.5) * h / oh)), h - 1)
      sx = min(int(math.floor((x + 0.5) * w / ow)), w - 1)
      out[y, x] = img[sy, sx]
  return out


@pytest.fixture
def rand_img():
  return np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)


# --- Parsing ----------------------------------------------------------------


def test_parse_keeps_spec_and_ops():
  spec = "decode|resize(256)|central_crop(224)|value_range(-1, 1)"
  p = pp.parse(spec)
  assert p.spec == spec
  assert [op.text for op in p.ops] == spec.split("|")
  assert not p.is_random


def test_parse_kwargs_and_quoted_bar():
  p = pp.parse("resize(size=(4, 6), method='nearest')|keep('image', 'a|b')")
  out = p({"image": np.zeros((2, 3, 3), np.uint8), "a|b": 1, "c": 2})
  assert out["image"].shape == (4, 6, 3)
  assert sorted(out) == ["a|b", "image"]


def test_unknown_op_lists_known_ops():
  with pytest.raises(ValueError, match="Unknown pp op 'resise'") as e:
    pp.parse("decode|resise(3)")
  assert "central_crop" in str(e.value) and "value_range" in str(e.value)


@pytest.mark.parametrize("bad", ["resize(__import__('os'))", "resize(*x)",
                                 "os.system('x')", "resize(("])
def test_parse_rejects_code(bad):
  with pytest.raises(ValueError):
    pp.parse(bad)


def test_bad_arguments_are_value_errors():
  with pytest.raises(ValueError, match="central_crop"):
    pp.parse("central_crop(1, 2, 3)")


def test_key_convention():
  ex = {"image": np.zeros((4, 4, 3), np.uint8),
        "other": np.full((8, 8, 3), 255, np.uint8)}
  out = pp.parse("resize(2, key='other')")(ex)
  assert out["other"].shape == (2, 2, 3) and out["image"].shape == (4, 4, 3)
  out = pp.parse("resize(2, inkey='other', outkey='small')")(ex)
  assert out["small"].shape == (2, 2, 3) and out["other"].shape == (8, 8, 3)
  assert ex["other"].shape == (8, 8, 3)  # Input dict untouched.


# --- Resize ------------------------------------------------------------------


@pytest.mark.parametrize("oh,ow", [(20, 31), (4, 5), (9, 13), (3, 20)])
def test_bilinear_matches_loop_reference(rand_img, oh, ow):
  got = resize.resize_bilinear(rand_img, oh, ow)
  np.testing.assert_array_equal(got, ref_bilinear(rand_img, oh, ow))
  # Cast back like big_vision: truncation, not rounding.
  out = pp.resize_image(rand_img, (oh, ow))
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, ref_bilinear(rand_img, oh, ow).astype(np.uint8))


def test_bilinear_is_the_loop_reference_bit_for_bit_on_random_sizes():
  """200 random (H, W, target) triples, odd sizes, upscales, 1 and 3 channels, uint8 and float inputs."""
  rng = np.random.default_rng(7)
  for case in range(200):
    h, w, oh, ow = (int(v) for v in rng.integers(1, 17, 4))
    c = int(rng.choice([1, 3]))
    img = (rng.integers(0, 256, (h, w, c)).astype(np.uint8) if case % 2 else
           rng.normal(0, 50, (h, w, c)).astype(np.float32))
    got, want = resize.resize_bilinear(img, oh, ow), ref_bilinear(img, oh, ow)
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), want.view(np.uint32)), (h, w, oh, ow, c)


def test_bilinear_known_values():
  # 1-D check of half-pixel centers: 2 -> 4 pixels of [0, 100].
  img = np.array([[[0.0], [100.0]]], np.float32)
  got = pp.resize_image(img, (1, 4))[0, :, 0]
  np.testing.assert_allclose(got, [0, 25, 75, 100])
  # uint8 truncation: 0 and 3 upsampled gives 0.75 and 2.25 -> 0 and 2.
  img8 = np.array([[[0], [3]]], np.uint8)
  assert pp.resize_image(img8, (1, 4))[0, :, 0].tolist() == [0, 0, 2, 3]


@pytest.mark.parametrize("oh,ow", [(3, 5), (4, 4), (9, 13), (6, 2), (20, 27)])
def test_area_matches_loop_reference(rand_img, oh, ow):
  got = resize.resize_area(rand_img, oh, ow)
  # The reference is exact (float64); TF's kernel accumulates in float32.
  np.testing.assert_allclose(got, ref_area(rand_img.astype(np.float64), oh, ow),
                             rtol=2e-5, atol=1e-4)


def test_area_exact_average_for_integer_factor():
  img = np.random.default_rng(1).integers(0, 256, (8, 6, 1), np.uint8)
  got = pp.resize_image(img, (4, 3), method="area")
  want = img.reshape(4, 2, 3, 2, 1).astype(np.float64).mean(axis=(1, 3))
  np.testing.assert_array_equal(got, np.floor(want).astype(np.uint8))


def test_nearest_matches_loop_reference(rand_img):
  for oh, ow in [(20, 31), (4, 5), (2, 13)]:
    np.testing.assert_array_equal(pp.resize_image(rand_img, (oh, ow), "nearest"),
                                  ref_nearest(rand_img, oh, ow))


def test_resize_small_rounding_and_aspect():
  img = np.zeros((30, 45, 3), np.uint8)
  out = pp.parse("resize_small(20)")({"image": img})["image"]
  assert out.shape == (20, 30, 3)
  # 25 x 35 -> factor 0.4 -> 35 * 0.4 = 14.
  out = pp.parse("resize_small(10)")({"image": np.zeros((25, 35, 3), np.uint8)})
  assert out["image"].shape == (10, 14, 3)
  # 5 x 9 -> 9 * 0.4 = 3.6 rounds to 4.
  out = pp.parse("resize_small(2)")({"image": np.zeros((5, 9, 1), np.uint8)})
  assert out["image"].shape == (2, 4, 1)
  # 2 x 5 -> 5 * 0.5 = 2.5 rounds half to even (tf.round): 2, not 3.
  out = pp.parse("resize_small(1)")({"image": np.zeros((2, 5, 1), np.uint8)})
  assert out["image"].shape == (1, 2, 1)


def test_antialias_not_silently_wrong():
  with pytest.raises(NotImplementedError):
    pp.parse("resize(4, antialias=True)")({"image": np.zeros((8, 8, 3), np.uint8)})


# --- Crops, value range, decode, labels ---------------------------------------


def test_central_crop_offsets():
  img = np.arange(7 * 10).reshape(7, 10, 1)
  out = pp.parse("central_crop(4)")({"image": img})["image"]
  np.testing.assert_array_equal(out, img[1:5, 3:7])  # (7-4)//2, (10-4)//2
  out = pp.parse("central_crop((2, 5))")({"image": img})["image"]
  np.testing.assert_array_equal(out, img[2:4, 2:7])
  out = pp.parse("central_crop")({"image": img})["image"]
  np.testing.assert_array_equal(out, img[:, 1:8])


def test_value_range():
  img = np.array([[[0, 255, 51]]], np.uint8)
  out = pp.parse("value_range(-1, 1)")({"image": img})["image"]
  assert out.dtype == np.float32
  np.testing.assert_allclose(out[0, 0], [-1, 1, -0.6], atol=1e-6)
  out = pp.parse("value_range(0, 1, 0, 100, clip_values=True)")({"image": img})
  np.testing.assert_allclose(out["image"][0, 0], [0, 1, 0.51], atol=1e-6)


def test_decode_bytes_and_arrays():
  gray = np.random.default_rng(2).integers(0, 256, (5, 6), np.uint8)
  buf = io.BytesIO()
  Image.fromarray(gray).save(buf, format="png")
  out = pp.parse("decode")({"image": buf.getvalue()})["image"]
  assert out.shape == (5, 6, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, -1))
  out = pp.parse("decode")({"image": gray[..., None]})["image"]
  np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, -1))
  out = pp.parse("decode(channels=1)")({"image": buf.getvalue()})["image"]
  np.testing.assert_array_equal(out, gray[..., None])
  assert pp.parse("to_rgb")({"image": gray})["image"].shape == (5, 6, 3)


def test_onehot_and_keep():
  out = pp.parse("onehot(4, key='label', key_result='labels')|keep('labels')")(
      {"label": 2, "image": 0})
  assert list(out) == ["labels"]
  np.testing.assert_array_equal(out["labels"], [0, 0, 1, 0])
  out = pp.parse("onehot(3, on=0.9, off=0.05)")({"label": np.array([0, 2])})
  np.testing.assert_allclose(out["label"], [0.9, 0.05, 0.9])


def test_random_ops_need_rng_and_are_deterministic(rand_img):
  p = pp.parse("random_crop(5)|flip_lr|inception_crop(4)")
  assert p.is_random
  with pytest.raises(ValueError, match="rng"):
    p({"image": rand_img})
  a = p({"image": rand_img}, np.random.default_rng(3))["image"]
  b = p({"image": rand_img}, np.random.default_rng(3))["image"]
  assert a.shape == (4, 4, 3)
  np.testing.assert_array_equal(a, b)
  crops = {p({"image": rand_img}, np.random.default_rng(s))["image"].tobytes()
           for s in range(10)}
  assert len(crops) > 1


def test_fewshot_pipeline_shape():
  img = np.random.default_rng(4).integers(0, 256, (37, 50), np.uint8)
  out = pp.parse("decode|resize(32)|central_crop(28)|value_range(-1, 1)")(
      {"image": img[..., None], "label": 3})
  assert out["image"].shape == (28, 28, 3) and out["image"].dtype == np.float32
  assert out["image"].min() >= -1 and out["image"].max() <= 1
  assert out["label"] == 3


@pytest.mark.parametrize("method", ["bilinear", "area", "nearest"])
def test_matches_tensorflow_if_installed(method):
  """Bit-exact check against TF itself (only where the `tf` extra is installed)."""
  tf = pytest.importorskip("tensorflow")
  rng = np.random.default_rng(5)
  random_cases = [((int(h), int(w), 3), (int(oh), int(ow))) for h, w, oh, ow in rng.integers(1, 300, (200, 4))]
  for shape, size in [((37, 53, 3), (224, 200)), ((300, 411, 3), (256, 256)), ((375, 500, 3), (256, 256)),
                      ((28, 28, 1), (8, 9)), ((17, 5, 3), (17, 5)), *random_cases]:
    img = rng.integers(0, 256, shape, np.uint8)
    want = tf.image.resize(img, size, method=method, antialias=False).numpy()
    np.testing.assert_array_equal(
        resize.RESIZERS[method](img, *size).astype(want.dtype), want)


INCEPTION_SIZES = [(375, 500), (224, 224), (28, 28), (600, 200)]


def _box_stats(boxes, h, w):
  boxes = np.asarray(boxes, np.float64)
  area, aspect = boxes[:, 2] * boxes[:, 3] / (h * w), boxes[:, 3] / boxes[:, 2]
  return np.array([area.mean(), area.std(), aspect.mean(), np.mean(area > 0.5), np.mean(area < 0.15)])


@pytest.mark.slow  # ≈ 20 s on 2 cores
def test_inception_crop_samples_like_tensorflow():
  """The box distribution of `inception_crop` against TF's sample_distorted_bounding_box as big_vision calls it.

  Only the random streams differ (Philox vs numpy), so the check is statistical: mean/std of the area fraction,
  mean aspect and the shares of large (> 0.5) and small (< 0.15) crops over 4,000 draws per image size, within ~4
  standard errors. A uniform-area sampler
  (mean area ≈ 0.52 instead of ≈ 0.34-0.38) fails it by tens of standard errors.
  """
  tf = pytest.importorskip("tensorflow")
  rng = np.random.default_rng(0)
  n = 4000
  for h, w in INCEPTION_SIZES:
    ours = [pp.sample_inception_box(h, w, rng) for _ in range(n)]
    assert all(0 <= top and 0 <= left and top + ch <= h and left + cw <= w for top, left, ch, cw in ours)
    theirs = []
    for i in range(n):
      begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
          [h, w, 3], tf.zeros([0, 0, 4], tf.float32), seed=[i, 7], area_range=(0.05, 1.0),
          min_object_covered=0, use_image_if_no_bounding_boxes=True)
      theirs.append((int(begin[0]), int(begin[1]), int(size[0]), int(size[1])))
    a, b = _box_stats(ours, h, w), _box_stats(theirs, h, w)
    tolerance = np.array([0.008, 0.008, 0.012, 0.03, 0.03])  # ≈ 4 se of each statistic at n = 4000
    assert np.all(np.abs(a - b) < tolerance), (h, w, a, b)
    # Same support: TF never touches the last row/column unless the crop spans the image.
    assert max(t + ch for t, _, ch, _ in ours if ch < h) <= h - 1
    assert max(t + ch for t, _, ch, _ in theirs if ch < h) <= h - 1


def test_inception_crop_statistics_without_tensorflow():
  """The documented algorithm's expectations, computed independently: for a square image and aspect ratio ≈ 1 the
  crop height is uniform on [√0.05·H, H], so E[area fraction] = (1 − 0.05^{3/2}) / (3(1 − √0.05)) ≈ 0.4226."""
  rng = np.random.default_rng(1)
  boxes = np.array([pp.sample_inception_box(400, 400, rng, ratio_range=(1.0, 1.0)) for _ in range(6000)])
  area = boxes[:, 2] * boxes[:, 3] / 400**2
  expected = (1 - 0.05**1.5) / (3 * (1 - 0.05**0.5))
  assert abs(area.mean() - expected) < 0.01 and np.all(boxes[:, 2] == boxes[:, 3])
  heights = boxes[:, 2]
  assert heights.min() >= round(400 * 0.05**0.5) - 1 and heights.max() == 400
