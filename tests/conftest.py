"""Shared pytest set-up: offline hub, and the fixture modules of each stage."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Each stage keeps its fixtures in its own module under tests/fixtures/.
pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.bundles",
]


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run where CTranslate2 or ONNX Runtime sees a CUDA device, and are skipped
    (with the reason shown) elsewhere."""
    import pytest

    gpu_tests = [item for item in items if "gpu" in item.keywords]
    if not gpu_tests:
        return
    from mtedge.engines import cuda_available

    if not any(cuda_available(engine) for engine in ("ct2", "onnx", "torch")):
        for item in gpu_tests:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; none is visible here"))
