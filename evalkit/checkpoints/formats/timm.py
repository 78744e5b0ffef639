"""timm checkpoints: a `.safetensors` state dict of a timm VisionTransformer (`save_file(model.state_dict())`).

The file does not say which architecture it holds: the timm model name does (`--timm_model`, a card's
`timm_model`, `evalkit.checkpoints.load_timm`), with timm's keyword overrides beside it. Position embeddings
resample as timm's `resample_abs_pos_embed` does (bicubic, antialiased).
"""
from evalkit.checkpoints.formats.registry import BuiltModel, Format, register_format
from evalkit.checkpoints.formats.safetensors import read_safetensors
from evalkit.checkpoints.layouts import timm
from evalkit.checkpoints.tree import CheckpointError


def _model_from(spec: str, options: dict) -> BuiltModel:
  """`options`: {"timm_model": name, **timm.create_model overrides}; num_classes None (features only) is timm's 0."""
  name = options.pop("timm_model", None)
  if not name:
    raise CheckpointError(f"checkpoint {spec}: a .safetensors state dict does not say its architecture; pass "
                          "--timm_model (e.g. vit_base_patch16_224), or the Hugging Face save_pretrained directory "
                          "(with its config.json)")
  num_classes = options.pop("num_classes", None) or 0
  arch = timm.architecture(name, **options, num_classes=num_classes)
  return BuiltModel(arch.model(), arch.describe())


register_format(Format("timm", read=read_safetensors, suffixes=(".safetensors",), convert=timm.convert,
                       model_from=_model_from, posemb_resize="bicubic_antialias"))
