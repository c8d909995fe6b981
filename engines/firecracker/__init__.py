"""Firecracker microVMs through Firecracker's HTTP API on a unix socket (see README.md)."""
