"""A real OpenID provider for the single sign-on tests: django-oauth-toolkit's, in a Django
project of its own, run as a second process on 127.0.0.1 (serve.py). Not a test module."""
