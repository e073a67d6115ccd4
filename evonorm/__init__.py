"""Hand-written EvoNorm layers and the seed graphs."""
from .layers import (
    EvoNorm1dB0, EvoNorm1dB1, EvoNorm1dB2, EvoNorm1dS0, EvoNorm1dS1, EvoNorm1dS2,
    EvoNorm2dB0, EvoNorm2dB1, EvoNorm2dB2, EvoNorm2dS0, EvoNorm2dS1, EvoNorm2dS2,
    EvoNorm3dB0, EvoNorm3dB1, EvoNorm3dB2, EvoNorm3dS0, EvoNorm3dS1, EvoNorm3dS2,
    resolve_groups,
)
from . import seeds

__all__ = [
    "EvoNorm1dB0", "EvoNorm1dB1", "EvoNorm1dB2", "EvoNorm1dS0", "EvoNorm1dS1", "EvoNorm1dS2",
    "EvoNorm2dB0", "EvoNorm2dB1", "EvoNorm2dB2", "EvoNorm2dS0", "EvoNorm2dS1", "EvoNorm2dS2",
    "EvoNorm3dB0", "EvoNorm3dB1", "EvoNorm3dB2", "EvoNorm3dS0", "EvoNorm3dS1", "EvoNorm3dS2",
    "resolve_groups", "seeds",
]

# model conversion, distributed training and timm interop
from .convert import ConversionSummary, convert  # noqa: E402  (the function shadows the submodule name)
from .distributed import convert_sync_evonorm  # noqa: E402
from . import timm_compat  # noqa: E402

__all__ += ["convert", "ConversionSummary", "convert_sync_evonorm", "timm_compat"]
