"""Create the first operator account once.

Username and password come from TT_ADMIN_USER / TT_ADMIN_PASSWORD; without a
password one is generated and printed this one time (it is stored only hashed).
"""

from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the first superuser if no superuser exists yet."

    def handle(self, *args, **opts):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("an operator account exists already; nothing to do")
            return
        username = os.environ.get("TT_ADMIN_USER", "admin")
        password = os.environ.get("TT_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        if os.environ.get("TT_ADMIN_PASSWORD"):
            self.stdout.write(f"created operator {username!r} with the password from TT_ADMIN_PASSWORD")
        else:
            self.stdout.write(
                f"created operator {username!r} with password {password!r}\n"
                "  (shown once; change it in the admin)"
            )
