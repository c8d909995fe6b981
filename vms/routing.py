"""The websockets of vms (ttportal/asgi.py): the live console (vms/consumers.py), for the
portal's page and, at the REST path, for API clients."""

from django.urls import path

from vms.consumers import ConsoleConsumer

websocket_urlpatterns = [
    path("ws/vms/<int:vm_id>/console/", ConsoleConsumer.as_asgi()),
    path("api/vms/<int:vm_id>/console/", ConsoleConsumer.as_asgi()),
]
