"""``mtedge average``: the mean of a training run's last snapshots, as a plain model directory."""

from __future__ import annotations

import click


@click.command("average")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("-n", "--last", "count", default=5, show_default=True, type=click.IntRange(min=1),
              help="How many of the newest snapshots to average.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Directory to write.")
@click.option("--force", is_flag=True, help="Replace an existing OUTPUT.")
def command(run_dir, count, output, force):
    """Average the weights of RUN_DIR's newest snapshots (`mtedge pretrain --keep-snapshots N`)."""
    from mtedge.train.averaging import average_snapshots, list_snapshots

    snapshots = list_snapshots(run_dir)[-count:]
    out = average_snapshots(snapshots, output, force=force)
    click.echo(f"[average] {len(snapshots)} snapshots ({snapshots[0].name} .. {snapshots[-1].name})", err=True)
    click.echo(str(out))
