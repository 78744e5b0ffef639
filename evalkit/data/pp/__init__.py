"""big_vision preprocessing strings, evaluated with numpy (no TensorFlow).

  registry      the op registry, `register` / `register_keyed`, and the parser: `parse(pp_string)`
  resize        TF's resize kernels in float32 (bilinear, nearest, area) and big_vision's cast back
  image_ops     decode, resize, crops and flips, inception crop, value ranges
  general_ops   keep, drop, copy, onehot
Adding an op is one function in the module of its kind, registered under its big_vision name.

A pp string is a "|"-separated list of ops, each written like a Python call,
e.g. ``decode|resize(256)|central_crop(224)|value_range(-1, 1)``. Arguments are
Python literals, parsed with ``ast.literal_eval`` (never ``eval``).

Numerical contract (checked against big_vision's pp/ops_image.py and
pp/ops_general.py, and TensorFlow's resize kernels):

* ``resize`` is TF2 ``tf.image.resize(..., antialias=False)``: "bilinear" is the
  ResizeBilinear kernel with half-pixel centers and edge clamping, "nearest" is
  ResizeNearestNeighbor with half-pixel centers, "area" is ResizeArea. All
  arithmetic is float32 and follows the kernels' operation order, so results
  match TF to the last bit barring compiler FMA contraction.
* After resizing, big_vision clips to the input dtype's range and casts back
  (``tf.cast(tf.clip_by_value(x, dtype.min, dtype.max), dtype)``); a float to
  integer cast truncates toward zero, so uint8 images are truncated, not
  rounded. We do the same.
* ``resize_small``/``resize_long`` default to method "area" without antialias
  and compute the other side as ``round(side * factor)`` in float32 with
  round-half-to-even (``tf.round``), factor = ``size / min(h, w)`` in float32.
* ``central_crop`` offsets are ``(h - crop_h) // 2`` and ``(w - crop_w) // 2``.
* ``value_range`` maps [in_min, in_max] linearly to [vmin, vmax] in float32.

Known differences from big_vision, all documented at the op:
* JPEG decoding uses PIL (libjpeg, accurate integer DCT). That equals
  big_vision's ``decode(precise=True)``; its default ``decode`` uses TF's
  INTEGER_FAST DCT and can differ by a few grey levels. PNG is exact.
* ``antialias=True`` (TF's scale_and_translate kernels) is not implemented.
* Random ops draw from a ``numpy.random.Generator``, so augmentations are
  distributed like big_vision's but not the same samples as TF's RNG.
"""
from evalkit.data.pp import general_ops, image_ops  # noqa: F401,I001  (registration: the one place op modules are listed)
from evalkit.data.pp.image_ops import adapt_channels, decode_image, sample_inception_box
from evalkit.data.pp.registry import (Example, Op, OpFn, PPError, Preprocess, known_ops, parse, register,
                                      register_keyed)
from evalkit.data.pp.resize import area_taps, bilinear_taps, cast_like_big_vision, nearest_taps, resize_image

__all__ = ["Example", "Op", "OpFn", "PPError", "Preprocess", "adapt_channels", "area_taps", "bilinear_taps",
           "cast_like_big_vision", "decode_image", "known_ops", "nearest_taps", "parse", "register", "register_keyed",
           "resize_image", "sample_inception_box"]
