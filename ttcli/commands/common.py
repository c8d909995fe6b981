"""Options every command shares."""

from __future__ import annotations

from typing import Annotated

import typer

# Plain (Click's) help, not Rich's: Rich's help formatter imports Markdown and more, half a
# second on a busy machine, and `tt --help` must start fast.
MARKUP = None


def group(help: str) -> typer.Typer:
    """A group of commands (tt env, tt snapshot…)."""
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=MARKUP,
                       context_settings={"help_option_names": ["-h", "--help"]})


Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts (errors too, on stderr).")]
Wait = Annotated[bool, typer.Option("--wait", help="Wait until the operation is done.")]
Timeout = Annotated[float, typer.Option("--timeout", metavar="SECONDS",
                                        help="With --wait: give up (exit 3) after this long.")]


def finish(tt, op: dict | None, *, wait: bool, timeout: float, as_json: bool, done: str,
           nothing: str = "nothing to do") -> dict | None:
    """The end of a long action: the operation (waited for with --wait), printed."""
    from ttcli import output

    if op is None:
        if as_json:
            output.emit_json({"operation": None, "message": nothing})
        else:
            output.say(nothing)
        return None
    if wait and not op["is_done"]:
        op = tt.operations.wait(op, timeout=timeout)
    if as_json:
        output.emit_json({"operation": op})
    elif op["is_done"]:
        output.say(f"{done} (operation {op['id']} {op['status']})")
    else:
        output.say(f"{done}: operation {op['id']} {op['status']}; `tt ops watch {op['id']}` follows it")
    return op
