"""The rows of the operations table (templates/envs/_operations.html, on the Env and VM
pages and polled every 2 s while an operation runs), as HTML built here.

Each row showed some 13 values through the template engine, 40 µs a row: a millisecond
of an Env page for its 25 operations, on every poll too. Here a row is one format string,
its values escaped once (as envs/vm_table.py does for the VM table); the markup is the
one the template had.
"""

from __future__ import annotations

from html import escape

from django.utils.safestring import SafeString, mark_safe

_TAKEN_OVER = ('<div class="muted small" title="The worker running it was lost; another took it over.">'
               "attempt {}</div>")


def row_html(op: dict) -> str:
    """One operation as operations_context gives it (kind_label, when, by_name, last_line...):
    its row, and a second one with its error if it has one."""
    status = escape(op["status"])
    attempt = _TAKEN_OVER.format(op["attempt"]) if op["attempt"] > 1 and op["is_live"] else ""
    last_line = f'<div class="muted small">{escape(op["last_line"])}</div>' if op["last_line"] else ""
    progress = escape(op["progress"])
    row = (
        f'\n    <tr class="op op-{status}">\n'
        f'      <td title="{escape(op["when_iso"])}">{escape(op["when"])}</td>\n'
        f'      <td>{escape(op["kind_label"])}</td>\n'
        f'      <td><code>{escape(op["target"])}</code></td>\n'
        f'      <td>{escape(op["by_name"])}</td>\n'
        f'      <td><span class="status status-op-{status}">{status}</span>{attempt}</td>\n'
        f'      <td class="progress-col">\n'
        f'        <progress max="100" value="{progress}">{progress}%</progress> '
        f'<span class="muted">{progress}%</span>\n'
        f"        {last_line}\n"
        f"      </td>\n"
        f"    </tr>"
    )
    if op["error_message"]:
        row += (f'\n    <tr class="op-error"><td></td><td colspan="5"><span class="error-code">'
                f'{escape(op["error_code"])}</span> {escape(op["error_message"])}</td></tr>')
    return row


def rows_html(operations: list[dict]) -> SafeString:
    """The table's body; every value is escaped in row_html."""
    return mark_safe("".join(row_html(op) for op in operations) + "\n    ")
