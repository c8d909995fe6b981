"""gunicorn's settings for `./tt.sh run --production` (gunicorn -c ttportal/gunicorn_conf.py).

Read from the same TT_* variables as ttportal/settings.py, with the same checks.
"""

import os
import sys
from pathlib import Path

# gunicorn runs this file by path: make the project importable from it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ttportal.config import env_int, env_networks, env_str

wsgi_app = "ttportal.wsgi:application"
# Where the TLS-terminating proxy connects (host:port, or unix:/path).
bind = [env_str("TT_BIND", "127.0.0.1:8000")]
# Synchronous workers: each takes one request at a time (a VM page may wait a few
# seconds for its node: TT_NODE_PROBE_TIMEOUT).
workers = env_int("TT_WEB_WORKERS", 2 * (os.cpu_count() or 1) + 1, minimum=1)
# A request that runs longer has its worker restarted (libvirt may wait up to 30 s
# for its daemon to come back).
timeout = 60
graceful_timeout = 30
# The same proxies Django trusts (ttportal/proxy.py) may tell gunicorn the scheme.
forwarded_allow_ips = ",".join(str(net) for net in env_networks("TT_TRUSTED_PROXIES", "127.0.0.1/32,::1/128"))
accesslog = "-"
access_log_format = '%(h)s "%({x-forwarded-for}i)s" %(t)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
errorlog = "-"
