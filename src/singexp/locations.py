"""Where singexp's package data lives: the config tree and the shipped weights (package data,
so a wheel carries them). The bottom of the package: it imports nothing of singexp's."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

#: the config tree; the repository's top-level ``conf`` is a link to ``src/singexp/conf``
CONF_DIR = Path(str(files("singexp") / "conf"))
#: the shipped weights (docs/results/embedded_weights.md)
ASSETS_DIR = Path(str(files("singexp") / "assets"))
#: the embedded default's DeepJSCC codecs (built by `make embedded-weights`)
EMBEDDED_JSCC_DIR = ASSETS_DIR / "jscc_shapes32"
