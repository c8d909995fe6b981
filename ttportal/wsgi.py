import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ttportal.settings")
application = get_wsgi_application()

# What is loaded by now (Django, the apps, their modules) lives as long as the process.
# Freezing it keeps the cyclic garbage collector from walking it again on every full
# collection, which otherwise lands on a request now and then (bench/list_latency.py:
# the Env page's p95 fell by a third). It is the measure Python's gc docs give for servers.
gc.freeze()
