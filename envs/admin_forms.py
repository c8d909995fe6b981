"""The admin's "Add Env" form: an Env for any user, with its VM rows.

The Env fields, the VM rows and the error mapping are shared with the portal
(envs/forms.py); the admin only adds the choice of owner.
"""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model

from envs.forms import EXTRA_VM_ROWS, EnvForm, VmRowForm, VmRowFormSet, filled_rows, show_error

__all__ = ["EXTRA_VM_ROWS", "EnvAddForm", "VmRowForm", "VmRowFormSet", "filled_rows", "show_error"]


class OwnerChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, user) -> str:
        full_name = user.get_full_name()
        return f"{user.get_username()} ({full_name})" if full_name else user.get_username()


class EnvAddForm(EnvForm):
    owner = OwnerChoiceField(queryset=get_user_model().objects.none(), help_text="Who the Env is for.")

    field_order = ["owner", "name", "lifetime_hours", "deny_outgoing"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        user_model = get_user_model()
        self.fields["owner"].queryset = user_model.objects.filter(is_active=True).order_by(
            user_model.USERNAME_FIELD
        )
