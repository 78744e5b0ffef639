"""timm checkpoints: a `.safetensors` state dict of a timm VisionTransformer (`save_file(model.state_dict())`).

The file does not say which architecture it holds: the timm model name does (`--timm_model`, a card's
`timm_model`, `evalkit.checkpoints.load_timm`). Position embeddings resample as timm's `resample_abs_pos_embed`
does (bicubic, antialiased).
"""
from evalkit.checkpoints import timm
from evalkit.checkpoints.formats.registry import Format, register_format
from evalkit.checkpoints.formats.safetensors import read_safetensors

register_format(Format("timm", read=read_safetensors, suffixes=(".safetensors",), convert=timm.convert,
                       posemb_resize="bicubic_antialias"))
