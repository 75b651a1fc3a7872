"""The export stage: HF checkpoint → bundle (ONNX + CTranslate2 + torch copy), validated.

Heavy libraries (torch, transformers, optimum, ctranslate2's converters) are imported inside the
functions that use them.
"""

from mtedge.convert.pipeline import (DEFAULT_CT2_PRECISIONS, DEFAULT_ONNX_PRECISIONS, ENGINES,
                                     export_bundle)
from mtedge.convert.validation import QualityGateError

__all__ = ["export_bundle", "QualityGateError", "ENGINES", "DEFAULT_ONNX_PRECISIONS", "DEFAULT_CT2_PRECISIONS"]
