"""The admin's "Add Env" form: an Env for any user, with its VM rows.

The Env fields, the VM rows and the error mapping are shared with the portal
(envs/forms.py); the admin only adds the choice of owner.
"""

from __future__ import annotations

from django import forms
from django.contrib.admin.helpers import ActionForm
from django.contrib.auth import get_user_model

from envs.forms import EXTRA_VM_ROWS, EnvForm, VmRowForm, VmRowFormSet, filled_rows, show_error

__all__ = ["EXTRA_VM_ROWS", "EnvActionForm", "EnvAddForm", "VmRowForm", "VmRowFormSet", "filled_rows",
           "show_error"]


class OwnerChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, user) -> str:
        full_name = user.get_full_name()
        return f"{user.get_username()} ({full_name})" if full_name else user.get_username()


IGNORE_QUOTA_LABEL = "Ignore the owner's quota"


def ignore_quota_field(help_text: str) -> forms.BooleanField:
    """The operator's explicit "the owner's quota does not bind this" (recorded in the
    operation's params). Off unless ticked: staff acting for a user are bound by it."""
    return forms.BooleanField(required=False, label=IGNORE_QUOTA_LABEL, help_text=help_text)


class EnvAddForm(EnvForm):
    owner = OwnerChoiceField(queryset=get_user_model().objects.none(), help_text="Who the Env is for.")
    ignore_quota = ignore_quota_field(
        "Create it even if it takes the owner past their quota (live Envs, VMs, vCPUs, memory, disk, "
        "lifetime). Recorded on the operation."
    )

    field_order = ["owner", "name", "lifetime_hours", "deny_outgoing", "ignore_quota"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        user_model = get_user_model()
        self.fields["owner"].queryset = user_model.objects.filter(is_active=True).order_by(
            user_model.USERNAME_FIELD
        )


class EnvActionForm(ActionForm):
    """The Env list's action bar, with the quota override the extend action honours."""

    ignore_quota = ignore_quota_field("Extend: even past the owner's longest lifetime or extension.")

    @classmethod
    def ignore_quota_in(cls, request) -> bool:
        """The box as posted with the action (the rest of the bar is the admin's to check)."""
        field = cls.base_fields["ignore_quota"]
        return field.clean(field.widget.value_from_datadict(request.POST, {}, "ignore_quota"))
