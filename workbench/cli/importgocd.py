"""``workbench import-gocd cruise-config.xml [--out DIR] [--cipher-file PATH] [--force] [--strict]``.

Exit status: 0 when the files were written (the report lists what was not
carried over, with XML lines); 1 with ``--strict`` when the report is not
empty of dropped elements or secrets needing a new value (files are still
written); 2 when nothing was written: unsafe or malformed XML, a bad cipher
file, files that would be overwritten without ``--force``, or output that
would not validate beside the target's existing pipeline files.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from . import EXIT_FAILED, main, plural


@main.command("import-gocd")
@click.argument("xml", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Workspace folder to write into (default: the workspace, -w): pipelines/*.gocd.yaml, "
                   "config_repos.yaml, import-gocd-report.txt.")
@click.option("--cipher-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The GoCD server's config/cipher.aes: secure values are decrypted with it and re-encrypted "
                   "with the workbench's key.")
@click.option("--force", is_flag=True, help="Replace files of the same names in the output folder.")
@click.option("--strict", is_flag=True, help="Exit 1 when something was not carried over (files are still written).")
@click.pass_context
def import_gocd(ctx: click.Context, xml: Path, out: Path | None, cipher_file: Path | None, force: bool,
                strict: bool) -> None:
    """Convert a GoCD server's cruise-config.xml into workbench pipeline files, and report every element
    not carried over with its XML line."""
    from ..importer.gocd import aes, convert, write
    from ..importer.gocd.xmlread import read_file

    root = out or Path(ctx.find_root().obj.get("workspace") or os.environ.get("WORKBENCH_WORKSPACE") or os.getcwd())
    key = aes.read_cipher_file(cipher_file) if cipher_file is not None else None
    result = convert(read_file(xml), str(xml), key=key, encrypt=_encryptor(root))
    written = write(result, root, force=force)
    _print_report(result)
    click.echo(f"converted {plural(result.pipelines, 'pipeline')} in {plural(result.groups, 'group')} into "
               f"{root}: {', '.join(str(p.relative_to(root)) for p in written)}")
    if strict and any(n.kind in ("dropped", "secret") for n in result.notes):
        sys.exit(EXIT_FAILED)


def _encryptor(root: Path):  # type: ignore[no-untyped-def]
    """Encrypt with the output workspace's key (created on first use, as `workbench encrypt` does)."""
    from ..secrets import encrypt
    from ..workspace import Workspace

    ws: list[object] = []

    def run(value: str) -> str:
        if not ws:
            root.mkdir(parents=True, exist_ok=True)
            ws.append(Workspace.open(root))
        return encrypt(value, ws[0])  # type: ignore[arg-type]

    return run


def _print_report(result: object) -> None:
    from ..reporting import print_table

    notes = result.notes  # type: ignore[attr-defined]
    if not notes:
        click.echo("everything was carried over")
        return
    click.echo(f"{plural(len(notes), 'element')} not carried over as they were "
               "(also in import-gocd-report.txt):")
    print_table([{"line": f"{n.line}:{n.col}", "kind": n.kind, "element": n.element, "what": n.message}
                 for n in notes], ["line", "kind", "element", "what"])
