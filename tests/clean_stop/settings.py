"""The project's settings plus the test-only app whose operation kind blocks
(DJANGO_SETTINGS_MODULE=tests.clean_stop.settings for `./tt.sh serve`)."""

from ttportal.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.clean_stop.apps.CleanStopConfig"]  # noqa: F405
