"""gunicorn's settings for `./tt.sh run --production` (gunicorn -c ttportal/gunicorn_conf.py).

Read from the same TT_* variables as ttportal/settings.py, with the same checks.
"""

import os
import sys
from pathlib import Path

# gunicorn runs this file by path: make the project importable from it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ttportal.config import env_int, env_networks, env_str

# ASGI (Django for HTTP, Channels for the console's websocket: ttportal/asgi.py), each worker
# an event loop (uvicorn's) rather than one request at a time.
wsgi_app = "ttportal.asgi:application"
worker_class = "uvicorn_worker.UvicornWorker"
# Where the TLS-terminating proxy connects (host:port, or unix:/path).
bind = [env_str("TT_BIND", "127.0.0.1:8000")]
# Django's views still run one at a time per worker thread pool (sync views under ASGI run
# in a thread), and an open console holds a websocket, not a worker.
workers = env_int("TT_WEB_WORKERS", 2 * (os.cpu_count() or 1) + 1, minimum=1)
# A worker whose event loop has not told the arbiter it lives for this long is restarted
# (views run in threads beside the loop: libvirt may wait up to 30 s for its daemon).
timeout = 60
graceful_timeout = 30
# The same proxies Django trusts (ttportal/proxy.py) may tell gunicorn the scheme.
forwarded_allow_ips = ",".join(str(net) for net in env_networks("TT_TRUSTED_PROXIES", "127.0.0.1/32,::1/128"))
# uvicorn's workers write their own access lines (client, request, status): gunicorn's
# access_log_format does not apply to them.
accesslog = "-"
errorlog = "-"
