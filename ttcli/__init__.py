"""tt: TT Portal's command line (Typer over ttclient). Entry point: ttcli.main:main.

Start-up matters (`tt --help` < 300 ms): only Typer and the standard library are imported
at start; httpx (through ttclient), Rich, YAML and websockets are imported by the commands
that use them.
"""
