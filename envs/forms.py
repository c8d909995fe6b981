"""The "new Env" form and its VM rows, shared by the portal and the admin.

Plain forms, no model forms: they only parse what the user typed into the
arguments of envs.services.env_create, which does every check that matters
(names, template sizes, lifetime limit, ports, capacity) and writes the rows.
A refusal comes back as a TTError naming a field ("name", "vms[1].disk_mb",
"vms[0].ports[2]"); `show_error` puts it next to that field.

The admin's form (envs.admin_forms.EnvAddForm) adds the owner; the portal's
owner is always the signed-in user. Both submit through `create_env_from`. The
portal's "Add VM" page uses one VM row (AddVmForm) and `show_vm_error`.
"""

from __future__ import annotations

import re
import uuid

from django import forms
from django.conf import settings

from envs import blueprints, envfiles, services
from operations.models import Operation
from ttportal import limits
from ttportal.errors import Forbidden, InvalidInput, TTError
from ttportal.hours import MIN_SECONDS, hours, parse_hours
from ttportal.refusals import refused
from vms.models import Vm, VmTemplate, engine_kinds_in_service
from vms.new_vms import NewVm

EXTRA_VM_ROWS = 3

# "vms[2].disk_mb", "vms[0].ports[3]", "vms[1]"
_VM_FIELD = re.compile(r"^vms\[(\d+)\](?:\.(\w+))?(?:\[(\d+)\])?$")


def _number_widget() -> forms.NumberInput:
    return forms.NumberInput(attrs={"min": limits.IDLE_SUSPEND_MIN, "max": limits.IDLE_SUSPEND_MAX})


class EnvForm(forms.Form):
    name = forms.CharField(
        help_text="Lower-case letters, digits and hyphens; unique among the owner's live Envs.",
    )
    # Typed as hours, cleaned to seconds by the portal's one hours parser (clean_lifetime_hours).
    lifetime_hours = forms.CharField(
        label="Lifetime (hours)",
        widget=forms.NumberInput(attrs={"step": "any", "min": hours(MIN_SECONDS)}),
    )
    deny_outgoing = forms.BooleanField(
        required=False, help_text="Cut the VMs off from everything beyond the node's network.",
    )
    # Bounds are the service's (envs/sleep.py), which names the field when refused.
    idle_suspend = forms.IntegerField(
        label="Sleep when idle (minutes)", required=False, widget=_number_widget(),
        help_text="Save every VM after this many minutes without a new connection to its forwarded "
        "ports nor console, exec or file use; its next connection wakes it. Empty: never.",
    )
    # One key per rendered form: a double submit returns the first operation instead
    # of creating a second Env (the service keys it by the requesting user).
    idempotency_key = forms.CharField(widget=forms.HiddenInput, required=False, max_length=128)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Settings are read per form, not at import, so a deployment's (or a test's) values show.
        lifetime = self.fields["lifetime_hours"]
        lifetime.initial = hours(settings.TT_DEFAULT_ENV_LIFETIME)
        lifetime.help_text = (
            f"From now; default {hours(settings.TT_DEFAULT_ENV_LIFETIME)} h, "
            f"at most {hours(settings.TT_MAX_ENV_LIFETIME)} h."
        )
        self.fields["idempotency_key"].initial = uuid.uuid4().hex
        self.fields["idle_suspend"].initial = settings.TT_IDLE_SUSPEND_DEFAULT_MIN or None

    def clean_lifetime_hours(self) -> int:
        try:
            return parse_hours(self.cleaned_data["lifetime_hours"], "lifetime_hours",
                               max_seconds=settings.TT_MAX_ENV_LIFETIME)
        except InvalidInput as exc:
            raise forms.ValidationError(exc.message, code="invalid") from None

    def lifetime_seconds(self) -> int:
        """The lifetime typed in hours, as the whole seconds env_create takes."""
        return self.cleaned_data["lifetime_hours"]


class PortsField(forms.CharField):
    """ "80, 443 53/udp" -> ["80", "443", "53/udp"]; env_create parses and checks each one."""

    def to_python(self, value) -> list[str]:
        text = super().to_python(value).lower()  # "53/UDP" is typed too
        return [item for item in re.split(r"[\s,]+", text) if item]

    def has_changed(self, initial, data) -> bool:
        # Compare parsed lists: a blank row's "" must count as unchanged (Field compares to "").
        return self.to_python(data) != self.to_python(initial)

    def prepare_value(self, value):
        # A re-rendered form shows what was typed, not the Python list.
        if isinstance(value, list | tuple):
            return ", ".join(str(item) for item in value)
        return value


def _number() -> forms.NumberInput:
    return forms.NumberInput(attrs={"class": "vIntegerField"})


class TemplateSelect(forms.Select):
    """Each template's option carries its default ports (portal.js fills the row's ports
    with them while the user has typed none of their own)."""

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        template = getattr(value, "instance", None)
        if template is not None:
            option["attrs"]["data-ports"] = ", ".join(template.default_ports or [])
        return option


class TemplateChoiceField(forms.ModelChoiceField):
    """The runnable templates, each labelled with the engines it would run on:
    "tt/busybox-container (Docker)"."""

    def __init__(self, **kwargs):
        super().__init__(queryset=VmTemplate.objects.none(), widget=TemplateSelect, **kwargs)
        self.kinds: frozenset[str] = frozenset()

    def offer(self, kinds: frozenset[str]) -> None:
        """Offer what enabled nodes of these engine kinds can run."""
        self.kinds = kinds
        self.queryset = VmTemplate.objects.runnable(kinds).order_by("name")

    def label_from_instance(self, template: VmTemplate) -> str:
        engines = template.engine_labels(self.kinds)
        return f"{template.name} ({', '.join(engines)})" if engines else template.name


class VmRowForm(forms.Form):
    name = forms.CharField(widget=forms.TextInput(attrs={"size": 12}))
    template = TemplateChoiceField()
    cpu_num = forms.IntegerField(label="vCPUs", initial=1, widget=_number())
    mem_mb = forms.IntegerField(label="Memory (MiB)", initial=256, widget=_number())
    disk_mb = forms.IntegerField(label="Disk (MiB)", required=False, help_text="Empty: the template's size.",
                                 widget=_number())
    ports = PortsField(required=False, help_text='Inner ports to forward, e.g. "22, 80, 53/udp" (NAT only).',
                       widget=forms.TextInput(attrs={"size": 16, "placeholder": "22, 80, 53/udp"}))
    # Short labels: the rows are a table on a laptop screen; the help text says the rest.
    net_kind = forms.ChoiceField(
        label="Network", choices=[(Vm.NetKind.NAT, "NAT"), (Vm.NetKind.FLAT, "Flat")], initial=Vm.NetKind.NAT,
        help_text="NAT: reached through ports the node forwards. Flat: at the VM's own routable address.",
    )
    user_data = forms.CharField(
        label="cloud-config", required=False, strip=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 22, "placeholder": "#cloud-config",
                                     "spellcheck": "false"}),
        help_text="Optional, templates with cloud-init only: your own #cloud-config (YAML), "
        "run on first boot.",
    )

    def __init__(self, *args, kinds: frozenset[str] | None = None, **kwargs):
        """`kinds`: engine_kinds_in_service(), read once for all the rows of a formset."""
        super().__init__(*args, **kwargs)
        self.fields["template"].offer(engine_kinds_in_service() if kinds is None else kinds)

    def to_new_vm(self) -> NewVm:
        data = self.cleaned_data
        return NewVm(
            name=data["name"], template=data["template"], cpu_num=data["cpu_num"], mem_mb=data["mem_mb"],
            disk_mb=data["disk_mb"], ports=data["ports"], net_kind=data["net_kind"],
            user_data=data["user_data"].replace("\r\n", "\n"),  # browsers send CRLF
        )


class AddVmForm(VmRowForm):
    """One more VM for a live Env (vms.services.vm_add)."""

    # As on the Env form: a double submit returns the first operation.
    idempotency_key = forms.CharField(widget=forms.HiddenInput, required=False, max_length=128)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["idempotency_key"].initial = uuid.uuid4().hex


class BaseVmRowFormSet(forms.BaseFormSet):
    """Its rows offer the same templates: what the nodes run is read once, not per row."""

    def __init__(self, *args, form_kwargs=None, **kwargs):
        form_kwargs = {"kinds": engine_kinds_in_service(), **(form_kwargs or {})}
        super().__init__(*args, form_kwargs=form_kwargs, **kwargs)


VmRowFormSet = forms.formset_factory(
    VmRowForm, formset=BaseVmRowFormSet, extra=EXTRA_VM_ROWS, min_num=1, validate_min=True, max_num=100,
    validate_max=True,
)


def filled_rows(formset) -> list[VmRowForm]:
    """The rows the user filled in, in order (blank extra rows are skipped)."""
    return [form for form in formset.forms if form.has_changed()]


def show_error(exc: TTError, form: EnvForm, formset, rows: list[VmRowForm]) -> None:
    """Attach a service refusal to the field it names; anything else is a form-wide error.

    `rows` are the forms whose VMs were passed to the service, in the same order,
    so "vms[i]" is rows[i] even when the user left a blank row between two.
    """
    where = exc.field or ""
    if where == "lifetime":
        form.add_error("lifetime_hours", exc.message)
        return
    if where in form.fields and where != "idempotency_key":
        form.add_error(where, exc.message)
        return
    if where == "vms":
        formset.non_form_errors().append(exc.message)
        return
    match = _VM_FIELD.match(where)
    if match and int(match[1]) < len(rows):
        _row_error(rows[int(match[1])], match[2], match[3], exc.message)
        return
    form.add_error(None, str(exc))


def _row_error(row: VmRowForm, field: str | None, item: str | None, message: str) -> None:
    """A refusal of one VM row's `field` (its `item`th port, for ports) beside that field."""
    if field == "ports" and item is not None:
        ports = row.cleaned_data.get("ports") or []
        if int(item) < len(ports):
            message = f"{ports[int(item)]}: {message}"
    if field in row.fields:
        row.add_error(field, message)
    else:
        row.add_error(None, f"{field}: {message}" if field else message)


# "name", "cpu_num", "ports[1]": how vms.services.vm_add names the fields of its one VM.
_ONE_VM_FIELD = re.compile(r"^(\w+)(?:\[(\d+)\])?$")


def show_vm_error(exc: TTError, form: AddVmForm) -> None:
    """Attach vm_add's refusal to the field it names; anything else is a form-wide error."""
    match = _ONE_VM_FIELD.match(exc.field or "")
    if match and match[1] in form.fields:
        _row_error(form, match[1], match[2], exc.message)
    else:
        form.add_error(None, str(exc))


class EnvFileForm(forms.Form):
    """An Env file pasted or uploaded on the New Env page; envs.envfiles reads it, as the API does."""

    text = forms.CharField(
        label="Env file (tt.yaml)", required=False, strip=False,
        widget=forms.Textarea(attrs={"rows": 12, "cols": 60, "spellcheck": "false",
                                     "placeholder": "name: ci\nlifetime: 2h\nvms:\n  - name: web[1..2]\n"
                                                    "    template: tt/busybox\n    ports: [80]"}),
        help_text="Paste the file, or upload it below; the file's problems are shown with their lines.",
    )
    upload = forms.FileField(label="or upload", required=False)
    idempotency_key = forms.CharField(widget=forms.HiddenInput, required=False, max_length=128)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["idempotency_key"].initial = uuid.uuid4().hex

    def clean(self):
        data = super().clean()
        upload = data.get("upload")
        if upload is not None:
            raw = upload.read(envfiles.MAX_BYTES + 1)
            if len(raw) > envfiles.MAX_BYTES:
                raise forms.ValidationError(f"an Env file is at most {envfiles.MAX_CHARS} characters")
            try:
                data["text"] = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise forms.ValidationError("the uploaded file is not UTF-8 text") from None
        if not (data.get("text") or "").strip():
            raise forms.ValidationError("paste an Env file or upload one")
        data["text"] = data["text"].replace("\r\n", "\n")  # browsers send CRLF
        return data


def create_env_from_file(form: EnvFileForm, *, by) -> Operation | None:
    """Read the pasted or uploaded file and make its Env (envs.envfiles.env_up_from: env_create,
    then its peers) owned by `by`; None with the problems on the form, each with its line."""
    if not form.is_valid():
        return None
    try:
        ef = envfiles.read(form.cleaned_data["text"])
        return envfiles.env_up_from(ef, owner=by, by=by, idempotency_key=form.cleaned_data["idempotency_key"])
    except Exception as exc:
        error = refused(exc)
        problems = error.problems if isinstance(error, envfiles.EnvFileInvalid) else [error]
        for problem in problems:
            form.add_error(None, _said(problem))
        return None


def _said(problem) -> str:
    """"line 12: vms[1].mem_mb: must be ..." (a refusal without a field or line: its message)."""
    if isinstance(problem, TTError):
        return str(problem)
    where = f"line {problem.line}: " if problem.line else ""
    return f"{where}{problem.field}: {problem.message}" if problem.field else f"{where}{problem.message}"


def create_env_from(form: EnvForm, formset, *, by, owner=None) -> Operation | None:
    """Validate the form and its VM rows, then env_create; None (with the errors on the
    forms) when anything is refused (ttportal.refusals: a race the database caught is
    a form-wide "retry"). `owner` defaults to the form's own owner field (admin)."""
    if not (form.is_valid() and formset.is_valid()):
        return None
    rows = filled_rows(formset)
    try:
        return services.env_create(
            owner=owner or form.cleaned_data["owner"], by=by, name=form.cleaned_data["name"],
            vms=[row.to_new_vm() for row in rows], lifetime=form.lifetime_seconds(),
            deny_outgoing=form.cleaned_data["deny_outgoing"],
            idle_suspend=form.cleaned_data.get("idle_suspend"),
            # Only the admin's form has the box (staff only); the portal's never does.
            ignore_quota=form.cleaned_data.get("ignore_quota", False),
            idempotency_key=form.cleaned_data["idempotency_key"],
        )
    except Exception as exc:
        show_error(refused(exc), form, formset, rows)
        return None


class BlueprintForm(EnvFileForm):
    """A blueprint's file (pasted or uploaded, as on the New Env page, whose import card posts
    here too: the same prefix), its name and description; envs.blueprints checks them."""

    name = forms.CharField(required=False, label="Blueprint name",
                           help_text="Lower-case letters, digits and hyphens; empty: the file's name.")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))

    def save(self, *, by, blueprint=None):
        """blueprint_save of the form's fields; None with the refusal on the form (each of a
        file's problems with its line). Forbidden is the caller's (a 403)."""
        if not self.is_valid():
            return None
        data = self.cleaned_data
        try:
            return blueprints.blueprint_save(by=by, blueprint=blueprint, text=data["text"],
                                             name=data["name"] or None, description=data["description"])
        except Forbidden:
            raise
        except Exception as exc:
            error = refused(exc)
            problems = error.problems if isinstance(error, envfiles.EnvFileInvalid) else [error]
            for problem in problems:
                field = getattr(problem, "field", "")
                if field in ("name", "description") and not isinstance(problem, envfiles.Problem):
                    self.add_error(field, problem.message)
                else:
                    self.add_error(None, _said(problem))
            return None
