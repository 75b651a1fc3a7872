"""The ``mtedge`` command line.

Each subcommand lives in ``mtedge/commands/<name>.py`` and imports its heavy
dependencies (torch, transformers, optimum) inside the command body, so that
``mtedge --help`` and ``mtedge translate`` stay light.
"""

from __future__ import annotations

import importlib
import sys

import click

from mtedge import __version__
from mtedge.errors import UserError

# name -> module under mtedge.commands that defines a click command called `command`
SUBCOMMANDS = ["pretrain", "average", "train", "merge", "export", "shortlist", "translate", "translate-corpus", "bench",
               "info", "serve"]


class _LazyGroup(click.Group):
    """Loads subcommand modules only when listed or invoked."""

    def list_commands(self, ctx):
        return list(SUBCOMMANDS)

    def get_command(self, ctx, name):
        return self._load(name)

    @staticmethod
    def _load(name):
        if name not in SUBCOMMANDS:
            return None
        # translate-corpus -> mtedge.commands.translate_corpus
        return importlib.import_module(f"mtedge.commands.{name.replace('-', '_')}").command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mtedge")
def cli():
    """mtedge: offline machine translation — train, export, translate, bench."""


# Heavy libraries and the extra that installs them: a runtime-only install lacks them by design.
EXTRA_FOR_MODULE = {"torch": "train", "transformers": "train", "peft": "train", "safetensors": "train",
                    "sacrebleu": "train", "polib": "data", "optimum": "export", "onnx": "export",
                    "matplotlib": "bench", "starlette": "serve", "uvicorn": "serve", "ray": "distributed"}


def main(argv=None):
    try:
        rc = cli.main(args=argv, prog_name="mtedge", standalone_mode=False)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in EXTRA_FOR_MODULE:
            raise
        click.echo(f"error: this command needs {top}, which the base install leaves out; "
                   f"install it with: pip install 'mtedge[{EXTRA_FOR_MODULE[top]}]' (or 'mtedge[all]')", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        # click turns Ctrl-C inside a command into Abort; long commands leave a resumable state behind
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
