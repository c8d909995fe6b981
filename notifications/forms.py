"""The portal's notification forms: they parse what the user typed; the rules (a URL we
send to, names, limits) stay in notifications.services."""

from __future__ import annotations

from django import forms

from ttportal import limits


class EmailForm(forms.Form):
    email_enabled = forms.BooleanField(label="Email me notifications", required=False)


class WebhookForm(forms.Form):
    endpoint = forms.CharField(
        label="URL", max_length=limits.WEBHOOK_URL_MAX,
        widget=forms.URLInput(attrs={"placeholder": "https://ci.example.com/hooks/tt",
                                     "spellcheck": "false"}),
        help_text="http:// or https://. Each notification is POSTed there as JSON, signed with the secret "
        "shown once when you add it.",
    )
    name = forms.CharField(max_length=limits.TOKEN_NAME_MAX, required=False,
                           help_text="Default: the URL's host.")
