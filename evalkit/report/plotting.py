"""matplotlib without a display: figures as PNG bytes or data URIs (for self-contained HTML)."""
from __future__ import annotations

import base64
import io


def pyplot():
  """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def png_bytes(fig, dpi: int = 90) -> bytes:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
  return buf.getvalue()


def data_uri(png: bytes) -> str:
  return "data:image/png;base64," + base64.b64encode(png).decode()
