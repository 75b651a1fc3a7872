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
    """Tests marked ``gpu("ct2", ...)`` run where each engine named sees a CUDA device (``gpu`` alone: any
    engine), and are skipped, with the reason shown, elsewhere: a machine can have CTranslate2's CUDA
    libraries and lack onnxruntime's."""
    import pytest

    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    from mtedge.engines import cuda_available

    seen = {engine: cuda_available(engine) for engine in ("ct2", "onnx", "torch")}
    for item in gpu_tests:
        named = item.get_closest_marker("gpu").args
        blind = [engine for engine in named or seen if not seen[engine]]
        if blind if named else len(blind) == len(seen):
            item.add_marker(pytest.mark.skip(reason=f"needs a CUDA GPU that {', '.join(blind)} can use; "
                                                    f"none is visible to it here"))
