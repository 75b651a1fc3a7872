"""Translate with a bundle in the *base* install (no torch, no transformers): the runtime smoke check.

    .venv-runtime/bin/python -P tests/runtime_smoke.py [BUNDLE] [--engine onnx --engine ct2] [--precision int8]

`make check-runtime-install RUNTIME_SMOKE_BUNDLE=export/<name>` runs it in the venv that holds only
``pip install .``. With no BUNDLE it checks the imports and reports the translation step as skipped
(exit 0), so the check works before any bundle exists. Not a pytest module: it must run under the runtime
venv's interpreter, which has no pytest.

The Translator calls follow the runtime API of issue 5 (``mtedge.Translator(bundle, engine=, precision=,
device=)``, ``translate(texts)`` returning results with ``.text``).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

HEAVY = ("torch", "transformers")
SENTENCES = ["The cat sees the dog.", "The file was saved.", ""]


def fail(message: str) -> int:
    print(f"runtime smoke: FAILED: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", nargs="?", help="bundle directory (export/<name>); none: skip translating")
    parser.add_argument("--engine", action="append", choices=("onnx", "ct2"),
                        help="engine to try (repeatable; default: onnx and ct2)")
    parser.add_argument("--precision", default="int8", help="precision directory in the bundle (default int8)")
    args = parser.parse_args(argv)

    installed = [name for name in HEAVY if importlib.util.find_spec(name)]
    if installed:
        return fail(f"{', '.join(installed)} installed: this must run in the base install (.venv-runtime)")
    import mtedge

    if not args.bundle:
        print("runtime smoke: translation skipped (no bundle given; RUNTIME_SMOKE_BUNDLE=export/<name>)")
        return 0
    if not hasattr(mtedge, "Translator"):
        return fail("mtedge.Translator does not exist in this install")
    for engine in args.engine or ["onnx", "ct2"]:
        translator = mtedge.Translator(args.bundle, engine=engine, precision=args.precision, device="cpu")
        results = translator.translate(SENTENCES)
        texts = [result.text for result in results]
        if len(texts) != len(SENTENCES):
            return fail(f"{engine}: {len(SENTENCES)} inputs gave {len(texts)} outputs")
        if not all(isinstance(t, str) and t.strip() for t in texts[:-1]) or texts[-1] != "":
            return fail(f"{engine}: unexpected outputs {texts!r} (non-empty inputs need text, '' maps to '')")
        for src, text in zip(SENTENCES, texts):
            print(f"runtime smoke: {engine}/{args.precision}: {src!r} -> {text!r}")
    loaded = [name for name in HEAVY if name in sys.modules]
    if loaded:
        return fail(f"translating imported {', '.join(loaded)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
