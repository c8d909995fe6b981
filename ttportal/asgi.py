"""The ASGI application: Django for HTTP, Channels for websockets (the live console).

Served by uvicorn (`./tt.sh run`, `./tt.sh serve`) and by gunicorn's uvicorn workers in
production (ttportal/gunicorn_conf.py). Websockets take the session (the portal) or an API
token (`Authorization: Token ...`, API clients): the console's consumer (vms/consumers.py)
checks the origin of a session's websocket itself, since an API client sends none.
"""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ttportal.settings")
# Django first: it sets the apps up before anything imports a model.
django_asgi = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from accounts.ws_auth import TokenAuthMiddleware  # noqa: E402
from vms.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_asgi,
    # The session's user (AuthMiddlewareStack), replaced by a token's when the request has one.
    "websocket": AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns))),
})

# As ttportal/wsgi.py: what is loaded by now lives as long as the process; the cyclic
# collector need not walk it again.
gc.freeze()
