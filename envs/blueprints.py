"""Blueprints: Env files saved under a name, launched in one click, shared read-only.

One function per action, called by the portal, the API and the admin alike. A blueprint is
its owner's: only they (or staff holding the action's permission, ttportal/permissions.py)
change, share or delete it. Users it is shared with (by name, or through one of their
groups) and, once an operator publishes it, everyone only read and launch it: a launch is
env_up_from of its file, for the launcher, so the Env is theirs and env_create's quota,
limits and refusals apply to it as to any other.

The file is checked by the same parser as every Env file (envs.envfiles.read) whenever it
is saved, so a saved blueprint always parses; its problems are refused with their lines.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.recording import audited
from envs import envfiles
from envs.models import Blueprint
from operations.models import Operation
from ttportal import limits, permissions
from ttportal.errors import ConflictingInput, Forbidden, InvalidInput

MAX_TEXT_CHARS = envfiles.MAX_CHARS

_UNSET = object()


def max_per_user() -> int:
    return settings.TT_MAX_BLUEPRINTS_PER_USER


def _check(by, action: str, blueprint: Blueprint) -> None:
    permissions.check(by, action, owner_id=blueprint.owner_id, what="blueprint")


def _checked_name(name) -> str:
    if not isinstance(name, str) or len(name) > limits.NAME_MAX or not limits.matches(limits.NAME_PATTERN,
                                                                                        name):
        raise InvalidInput("name", limits.NAME_RULE)
    return name


def _checked_description(description) -> str:
    if not isinstance(description, str) or len(description) > limits.BLUEPRINT_DESCRIPTION_MAX \
            or "\x00" in description:
        raise InvalidInput("description", f"must be at most {limits.BLUEPRINT_DESCRIPTION_MAX} characters "
                           "of text")
    return description


def _checked_text(text) -> tuple[str, str]:
    """The file as saved (line ends normalised) and the name it gives its Env; its problems
    are refused as any Env file's (EnvFileInvalid: field, line, every problem)."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("text", "must be an Env file (tt.yaml)")
    text = text.replace("\r\n", "\n")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInput("text", f"an Env file is at most {MAX_TEXT_CHARS} characters")
    return text, envfiles.read(text).name


@audited("blueprint.save")
def blueprint_save(*, by, text=_UNSET, name=_UNSET, description=_UNSET,
                   blueprint: Blueprint | None = None) -> Blueprint:
    """A new blueprint of `by`'s (without `blueprint`), or `blueprint` changed: only the
    fields given. A new one's name defaults to the name its file gives the Env."""
    if by is None or not by.is_authenticated:
        raise Forbidden("sign in first")
    if blueprint is not None:
        _check(by, "blueprint_change", blueprint)
    elif text is _UNSET:
        raise InvalidInput("text", "must be an Env file (tt.yaml)")
    checked: dict = {}
    if text is not _UNSET:
        checked["text"], checked["env_name"] = _checked_text(text)
    if name is not _UNSET and name not in (None, ""):
        checked["name"] = _checked_name(name)
    elif blueprint is None:
        checked["name"] = _checked_name(checked["env_name"])
    if description is not _UNSET and description is not None:
        checked["description"] = _checked_description(description)
    owner = blueprint.owner if blueprint is not None else by
    with transaction.atomic():
        # The owner's row, locked: concurrent saves of one owner count and check names in turn.
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        theirs = Blueprint.objects.filter(owner=owner)
        if blueprint is None and theirs.count() >= max_per_user():
            raise ConflictingInput("name", f"you have {max_per_user()} blueprints, the most one keeps "
                                   "(TT_MAX_BLUEPRINTS_PER_USER): delete one first")
        if "name" in checked and theirs.filter(name=checked["name"]).exclude(
                pk=getattr(blueprint, "pk", None)).exists():
            raise ConflictingInput("name", f"you already have a blueprint named {checked['name']!r}")
        try:
            with transaction.atomic():
                if blueprint is None:
                    return Blueprint.objects.create(owner=owner, **checked)
                if checked:
                    for field, value in checked.items():
                        setattr(blueprint, field, value)
                    blueprint.updated_at = timezone.now()
                    blueprint.save(update_fields=[*checked, "updated_at"])
                return blueprint
        except IntegrityError:  # a concurrent save of the same name
            raise ConflictingInput("name", f"you already have a blueprint named {checked.get('name')!r}") \
                from None


@audited("blueprint.delete")
def blueprint_delete(*, blueprint: Blueprint, by) -> None:
    _check(by, "blueprint_delete", blueprint)
    Blueprint.objects.filter(pk=blueprint.pk).delete()


@audited("blueprint.share")
def blueprint_share(*, blueprint: Blueprint, by, users: list[str] | None = None,
                    groups: list[str] | None = None) -> Blueprint:
    """Share it read-only with exactly these users and groups (by username and group name;
    None leaves that side as it is, [] shares with none). Everyone named must exist: an
    unknown name is refused, naming its place in the list, and nothing changes."""
    _check(by, "blueprint_share", blueprint)
    found_users = found_groups = None
    if users is not None:
        found_users = _named(get_user_model().objects.filter(is_active=True), "username", users, "users",
                             "must name an active user")
        found_users = [user for user in found_users if user.pk != blueprint.owner_id]  # sees it already
    if groups is not None:
        found_groups = _named(Group.objects.all(), "name", groups, "groups", "must name an existing group")
    with transaction.atomic():
        if found_users is not None:
            blueprint.shared_with_users.set(found_users)
        if found_groups is not None:
            blueprint.shared_with_groups.set(found_groups)
    return blueprint


def _named(queryset, field: str, names: list[str], where: str, rule: str) -> list:
    if not isinstance(names, list | tuple):
        raise InvalidInput(where, "must be a list of names")
    found = {getattr(row, field): row for row in queryset.filter(**{f"{field}__in": list(names)})}
    for i, name in enumerate(names):
        if name not in found:
            raise ConflictingInput(f"{where}[{i}]", rule)
    return list(found.values())


@audited("blueprint.publish")
def blueprint_publish(*, blueprint: Blueprint, by, published: bool = True) -> Blueprint:
    """Publish it to everyone (or withdraw it): operators holding envs.publish_blueprint
    only, their own blueprints included."""
    permissions.check_staff(by, "blueprint_publish")
    if blueprint.published != published:
        blueprint.published = published
        blueprint.updated_at = timezone.now()
        blueprint.save(update_fields=["published", "updated_at"])
    return blueprint


@audited("blueprint.unpublish")
def blueprint_unpublish(*, blueprint: Blueprint, by) -> Blueprint:
    return blueprint_publish(blueprint=blueprint, by=by, published=False)


@audited("blueprint.launch")
def blueprint_launch(*, blueprint: Blueprint, by, name: str | None = None,
                     idempotency_key: str = "") -> Operation:
    """A new Env of `by`'s from the blueprint's file (named as the file names it, or
    `name`): env_up_from, so env_create's quota, cooldowns and refusals (a name already
    taken among their live Envs) apply as to any Env. Anyone who sees the blueprint may."""
    if by is None or not by.is_authenticated:
        raise Forbidden("sign in first")
    if not Blueprint.objects.visible_to(by).filter(pk=blueprint.pk).exists():
        raise Forbidden("this blueprint is not shared with you")
    if name not in (None, ""):
        _checked_name(name)
    ef = envfiles.read(blueprint.text, name=name or None)
    return envfiles.env_up_from(ef, owner=by, by=by, idempotency_key=idempotency_key)
