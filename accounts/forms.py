"""The portal's "new API token" form: parses what the user typed; the rules
(name length, expiry limits) stay in accounts.services.token_create. The sign-in forms
of the portal and the admin (password sign-in off under TT_OIDC_ONLY: accounts/oidc.py)."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm

from accounts.oidc import password_login_allowed, password_off_message

DAY = 24 * 3600


def default_days() -> int:
    return max(1, settings.TT_API_TOKEN_DEFAULT_TTL // DAY)


def max_days() -> int:
    return max(1, settings.TT_API_TOKEN_MAX_TTL // DAY)


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text='What it is for, e.g. "CI of project X".')
    expires_in_days = forms.IntegerField(label="Expires in (days)", min_value=1)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        days = self.fields["expires_in_days"]
        # Read at request time: the limits are settings (tests override them).
        days.initial = default_days()
        days.widget.attrs["max"] = max_days()
        days.help_text = f"1 to {max_days()} days; {default_days()} by default."

    def clean_expires_in_days(self) -> int:
        days = self.cleaned_data["expires_in_days"]
        if days > max_days():
            raise forms.ValidationError(f"Ensure this value is at most {max_days()}.")
        return days

    def expires_in(self) -> int:
        return self.cleaned_data["expires_in_days"] * DAY


class SshKeyForm(forms.Form):
    """What the user pastes; accounts.services.ssh_key_add holds the rules. Surrounding
    blanks and line ends of a paste are dropped, as a paste brings them."""

    public_key = forms.CharField(
        label="Public key", max_length=8192,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false",
                                     "placeholder": "ssh-ed25519 AAAA… you@host"}),
        help_text="The one line of your .pub file (ssh-ed25519, ecdsa or RSA of 2048 bits or more). "
        "Never the private key.",
    )
    name = forms.CharField(max_length=100, required=False, help_text="Default: the key's comment.")


def _password_off(form, base):
    """The error of a refused password sign-in: under TT_OIDC_ONLY, what to do instead."""
    if not password_login_allowed(form.cleaned_data.get("username")):
        return forms.ValidationError(password_off_message(), code="password_login_off")
    return base


class PasswordSignInForm(AuthenticationForm):
    """The portal's sign-in form: Django's, with a clear refusal when passwords are off."""

    def get_invalid_login_error(self):
        return _password_off(self, super().get_invalid_login_error())


class AdminPasswordSignInForm(AdminAuthenticationForm):
    """The admin's sign-in form, likewise (installed by accounts/admin.py)."""

    def get_invalid_login_error(self):
        return _password_off(self, super().get_invalid_login_error())
