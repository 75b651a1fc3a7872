"""mtedge: offline machine translation — train, export, translate, bench.

``mtedge.Translator`` and ``mtedge.Translation`` are loaded on first use, so ``import mtedge`` stays
light: onnxruntime / ctranslate2 load when a Translator builds its engine, torch and transformers
never (only the ``torch`` reference engine and the export/train/bench stages use them).
"""

__version__ = "0.1.0"

_LAZY = {"Translator": "mtedge.translator", "Translation": "mtedge.translator",
         "TranslationHypothesis": "mtedge.translator", "BundleTokenizer": "mtedge.tokenizer",
         "Bundle": "mtedge.bundle"}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mtedge' has no attribute {name!r}")
