"""``python -m benchmarks.corpora build {bible,sysmsg,webui,all} [--seed N]``"""

from __future__ import annotations

import argparse
import importlib

CORPORA = ("bible", "sysmsg", "webui")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.corpora", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="fetch sources and write data/<name>/{train,dev,test}.tsv + manifest.json")
    build.add_argument("corpus", choices=(*CORPORA, "all"))
    build.add_argument("--seed", type=int, default=0, help="chooses the held-out chapters/messages (default 0)")
    args = parser.parse_args(argv)
    for name in CORPORA if args.corpus == "all" else (args.corpus,):
        importlib.import_module(f"benchmarks.corpora.{name}").build(seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
