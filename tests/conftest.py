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
