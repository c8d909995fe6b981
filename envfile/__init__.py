"""Env files (tt.yaml): a declarative Env, read the same way by the tt command (offline),
the server (POST /api/envs/?format=envfile) and the portal's import.

Plain Python, no Django: the command line imports it without the server. The server's
own bounds (how many VMs, ports, the longest lifetime) it leaves to the server, which
names the file's line when it refuses one (EnvFile.locate).

    ef = envfile.load(text, source="tt.yaml", base_dir=pathlib.Path("."))
    ef.to_create_body()   # the body of POST /api/envs/
    ef.peers              # asked once the Env exists
    envfile.dump(ef.document())
"""

from envfile.model import EnvFile, dump, load
from envfile.problems import EnvFileError, Problem
from envfile.schema import schema

__all__ = ["EnvFile", "EnvFileError", "Problem", "dump", "load", "schema"]
