"""Task specs: big_vision's transfer-config values (pp per crop, minival splits, lengths), hashes, bad specs."""
import types

import pytest
import tensorflow_datasets as tfds

from evalkit import tasks
from evalkit.adapters import finetune

BV_TEST_PP = "decode|resize_small(448)|central_crop(384)|value_range(-1, 1)"
BV_TRAIN_PP = {
    "inception_crop": "decode|inception_crop(384)|flip_lr|value_range(-1, 1)",
    "resmall_crop": "decode|resize_small(448)|random_crop(384)|flip_lr|value_range(-1, 1)",
    "resize_crop": "decode|resize(448)|random_crop(384)|flip_lr|value_range(-1, 1)",
}
# big_vision configs/transfer.py: (minival percent, steps, warmup, lr grid, crop) per dataset.
BV_TRANSFER = {
    "imagenet2012_finetune": (1, 20_000, 500, (0.03, 0.01), "inception_crop"),
    "cifar100_finetune": (2, 10_000, 500, (0.01,), "resmall_crop"),
    "oxford_iiit_pet_finetune": (10, 500, 100, (0.01,), "inception_crop"),
    "oxford_flowers102_finetune": (10, 500, 100, (0.01,), "inception_crop"),
}


@pytest.mark.parametrize("crop", sorted(BV_TRAIN_PP))
def test_crop_writes_big_vision_pp(crop):
  assert finetune.transfer_pp(crop) == (BV_TRAIN_PP[crop], BV_TEST_PP)


@pytest.mark.parametrize("name", sorted(BV_TRANSFER))
def test_finetune_specs_follow_the_transfer_config(name):
  pct, steps, warmup, lrs, crop = BV_TRANSFER[name]
  task = tasks.load_task(name)
  assert (task.pp, task.config.pp_train) == (BV_TEST_PP, BV_TRAIN_PP[crop])
  cfg = task.config
  assert (cfg.total_steps, cfg.warmup_steps, cfg.lr_grid, cfg.batch_size) == (steps, warmup, lrs, 512)
  assert (task.config.decay_type, task.config.grad_clip_norm, task.train_split) == ("cosine", 1.0, "train")
  # The held-out minival is exactly tfds' `train[{100-pct}%:]`, for the dataset's real train size and others.
  for n in (1_281_167, 50_000, 3_680, 1_020, 1_297, 333):
    infos = {"train": types.SimpleNamespace(num_examples=n)}
    want = tfds.core.ReadInstruction.from_spec(f"train[{100 - pct}%:]").to_absolute(infos)[0].from_
    assert finetune.minival_cut(0, n, task.config.minival_fraction) == want, (name, n)


def test_imagenet_518_is_the_papers_g14_protocol():
  task = tasks.load_task("imagenet2012_finetune_518")
  assert task.pp == "decode|resize_small(604)|central_crop(518)|value_range(-1, 1)"
  assert task.config.pp_train == "decode|inception_crop(518)|flip_lr|value_range(-1, 1)"
  assert task.config.decay_type == "constant" and task.config.polyak_decay and task.headline_metric == "top1_polyak"
  assert [e.name for e in task.extra_tests] == ["real", "v2"] == [e.name for e in tasks.load_task(
      "imagenet2012_finetune").extra_tests]
  assert tasks.load_task("imagenet2012_finetune").extra_tests[0].label_key == "real_label"


def test_dataset_versions_pinned_where_big_vision_pins_them():
  assert tasks.load_task("cars196").dataset == "cars196:2.1.0"


def test_new_optional_fields_leave_old_spec_hashes_alone():
  """`headline` and `extra_tests` enter the hash only when set, so results written before them stay comparable."""
  digits = tasks.load_task("digits")
  assert "extra_tests" not in digits.spec() and "headline" not in digits.spec()
  assert digits.spec_hash == "4573e281f214dbaa"  # the hashes results of these specs have carried since written
  assert tasks.load_task("digits_finetune").spec_hash == "0b0c7917a1007444"


@pytest.mark.parametrize("body, needle", [
    ('crop = "inception_crop"\npp_train = "decode"', "`crop` writes pp and pp_train"),
    ('crop = "center_crop"', "unknown crop 'center_crop'"),
    ('crop = "resize_crop"\nheadline = "top1_polyak"', "'top1_polyak' is not a metric this task reports"),
    ('crop = "resize_crop"\n[[extra_tests]]\nname = "x"', "missing ['dataset', 'split']"),
])
def test_bad_finetune_specs_are_one_line_errors(tmp_path, body, needle):
  path = tmp_path / "bad.toml"
  path.write_text(f'dataset = "digits"\nprotocol = "finetune"\ntrain_split = "train"\ntest_split = "test"\n{body}\n')
  with pytest.raises(tasks.TaskError) as e:
    tasks.load_task(str(path))
  assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("fields, needle", [
    ({"shots": "abc"}, "shots must be a list"),
    ({"shots": [1, 2.7]}, "shots must be an integer"),
    ({"shots": [-5, 10]}, "distinct positive numbers"),
    ({"headline_shots": 7}, "headline_shots 7 is not one of shots"),
    ({"l2_reg": True}, "l2_reg must be a number"),
    ({"protocol": "finetune", "pp_train": "decode", "batch_size": 0}, "batch_size and total_steps must be positive"),
    ({"protocol": "linear_svm"}, "unknown protocol 'linear_svm'"),
])
def test_adapter_fields_are_type_checked_and_validated(fields, needle):
  spec = {"name": "x", "dataset": "digits", "protocol": "fewshot_ridge", "train_split": "train", "test_split": "test",
          "pp": "decode", **fields}
  with pytest.raises(tasks.TaskError, match=needle):
    tasks.make_task(**spec)
