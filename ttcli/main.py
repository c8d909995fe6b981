"""The `tt` command: its groups and the entry point (the console script `tt`)."""

from __future__ import annotations

import typer

from ttcli.commands import account, envs, guest, ops, snapshots, vms
from ttcli.commands.common import MARKUP
from ttcli.errors import Group

app = typer.Typer(
    cls=Group,
    name="tt",
    help="TT Portal from the command line: Envs of VMs, in a terminal or a CI job.\n\n"
    "Exit codes: 0 ok, 1 refused or failed, 2 usage, 3 timeout (exec and ssh: the command's own).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=MARKUP,
    context_settings={"help_option_names": ["-h", "--help"]},
)

account.register(app)
app.add_typer(envs.app, name="env")
app.add_typer(vms.app, name="vm")
guest.register(app)
app.add_typer(snapshots.app, name="snapshot")
app.add_typer(ops.app, name="ops")
app.add_typer(account.keys_app, name="keys")


def main() -> None:
    app(prog_name="tt")


if __name__ == "__main__":
    main()
