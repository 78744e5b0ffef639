"""Parameter layouts: how each ecosystem names and shapes a ViT's weights, mapped onto evalkit's (big_vision's) tree.

  big_vision        historical big_vision / vision_transformer layouts -> today's names
  timm              timm architecture names -> ViT settings; timm state dicts -> evalkit's tree
  hf                Hugging Face config.json -> ViT settings; transformers state dicts -> evalkit's tree
  pytorch           the PyTorch pieces timm and Hugging Face share (Linear, Conv2d, attention, LayerNorm)

A layout knows names and shapes only; how a file is stored is a format's job (`checkpoints/formats/`).
"""
