"""Silence library chatter around heavy calls, so the export's progress lines stay readable."""

from __future__ import annotations

import contextlib
import warnings


@contextlib.contextmanager
def quiet_libraries():
    """Hide the tracer warnings and info chatter of torch.onnx/optimum: our progress lines stay readable."""
    import logging

    loggers = [logging.getLogger(name) for name in ("optimum", "transformers", "onnxruntime", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
