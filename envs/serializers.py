"""API representations of Envs, and the bodies of Env actions (Operations: operations/serializers.py)."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from envs import peering
from envs.cloning import COUNT_MAX
from envs.models import ENV_ROLES, Blueprint, Env, EnvMember
from ttportal import limits
from ttportal.api_fields import Boolean, DateTime, Integer, Name, StrictSerializer, Text
from vms import policy
from vms.serializers import NewVmSerializer, VmBriefSerializer


class PeerSerializer(serializers.Serializer):
    env = serializers.IntegerField(source="other.pk", help_text="The other Env's id.")
    name = serializers.SerializerMethodField(help_text="The other Env as owner/name.")
    status = serializers.ChoiceField(
        choices=["active", "incoming", "outgoing"],
        help_text="active: peered; incoming: its owner asks, accept by asking back; outgoing: you asked.",
    )

    def get_name(self, peer) -> str:
        return f"{peer['other'].owner.get_username()}/{peer['other'].name}"


class EnvSerializer(serializers.HyperlinkedModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:env-detail")
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    vms = VmBriefSerializer(source="live_vms", many=True, read_only=True,
                            help_text="The Env's VMs that are not destroyed.")
    seconds_left = serializers.SerializerMethodField()
    cooldown_remaining = serializers.SerializerMethodField(
        help_text="Seconds until another long operation is accepted on this Env (0: now)."
    )
    peers = serializers.SerializerMethodField(
        help_text="Envs whose VMs may reach this Env's VMs (and asked or offered peerings)."
    )
    role = serializers.SerializerMethodField(
        help_text="Your role on it: owner, admin, operator or viewer (shared with you or one of "
        "your groups), or null (staff seeing another user's Env)."
    )

    class Meta:
        model = Env
        fields = [
            "id", "url", "name", "owner", "status", "start_at", "end_at", "seconds_left", "is_stopped",
            "deny_outgoing", "last_mgmt_at", "cooldown_remaining", "destroyed_at", "vms", "peers",
            "idle_suspend", "asleep_since", "role",
        ]
        extra_kwargs = {
            "idle_suspend": {"help_text": "Minutes without a new connection on its forwarded ports nor "
                             "console, exec or file use, after which every VM is saved (asleep); "
                             "null: never. Its first connection wakes it."},
            "asleep_since": {"help_text": "When it fell asleep (null: awake). Its lifetime keeps running."},
        }
        read_only_fields = fields

    def _now(self):
        # One instant per response, as the services take one per operation.
        return self.context.setdefault("now", timezone.now())

    @extend_schema_field(serializers.IntegerField())
    def get_seconds_left(self, env: Env) -> int:
        return env.seconds_left(self._now())

    @extend_schema_field(serializers.IntegerField())
    def get_cooldown_remaining(self, env: Env) -> int:
        return policy.cooldown_remaining(env, self._now())

    @extend_schema_field(serializers.ChoiceField(choices=ENV_ROLES, allow_null=True))
    def get_role(self, env: Env) -> str | None:
        request = self.context.get("request")
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        if env.owner_id == user.pk:
            return "owner"
        # A list view reads every row's roles at once (EnvViewSet.list).
        many = self.context.get("roles")
        return many.get(env.pk) if many is not None else env.role_of(user)

    @extend_schema_field(PeerSerializer(many=True))
    def get_peers(self, env: Env) -> list[dict]:
        # A list view reads every row's peerings at once (EnvViewSet.list).
        many = self.context.get("peerings")
        shown = many[env.pk] if many is not None and env.pk in many else peering.peerings_of(env)
        rows = [{"other": other, "status": status} for status, others in shown.items() for other in others]
        return PeerSerializer(rows, many=True).data


# --- request bodies -------------------------------------------------------------------


class EnvCreate(StrictSerializer):
    name = Name(help_text="DNS label, unique among your live Envs.")
    vms = NewVmSerializer(many=True, help_text="The VMs: at least one, at most TT_MAX_VMS_PER_ENV.")
    lifetime = Integer(
        min_value=limits.LIFETIME_MIN, max_value=limits.lifetime_max(), unit="seconds", required=False,
        help_text="Seconds from now (at most TT_MAX_ENV_LIFETIME); default TT_DEFAULT_ENV_LIFETIME. "
        "Not with end_at.",
    )
    end_at = DateTime(required=False, help_text="Instead of lifetime: the end, at most "
                      "TT_MAX_ENV_LIFETIME from now.")
    deny_outgoing = Boolean(default=False)
    idle_suspend = Integer(
        min_value=limits.IDLE_SUSPEND_MIN, max_value=limits.IDLE_SUSPEND_MAX, unit="minutes", required=False,
        allow_null=True, help_text="Sleep after this many idle minutes (null: never); default "
        "TT_IDLE_SUSPEND_DEFAULT_MIN (docs: Sleep when idle).",
    )
    owner = Text(rule="must name an active user", pattern=limits.PRINTABLE_PATTERN,
                 max_length=limits.USERNAME_MAX, required=False,
                 help_text="Username of the owner (staff only; default: you).")

    class Meta:
        schema_extra = {"not": {"required": ["end_at", "lifetime"]}}

    def get_fields(self):
        # Bounds that are settings are read per request (a deployment's, a test's).
        fields = super().get_fields()
        fields["vms"] = NewVmSerializer(
            many=True, min_length=1, max_length=limits.vms_max(), help_text=fields["vms"].help_text,
            error_messages={"min_length": "must list at least one VM",
                            "max_length": f"an Env holds at most {limits.vms_max()} VMs",
                            "empty": "must list at least one VM"},
        )
        fields["lifetime"] = _lifetime(fields["lifetime"])
        return fields


class EnvExtend(StrictSerializer):
    end_at = DateTime(required=False, help_text="The new end (at most TT_MAX_ENV_LIFETIME after "
                      "the Env's start).")
    lifetime = Integer(
        min_value=limits.LIFETIME_MIN, max_value=limits.lifetime_max(), unit="seconds", required=False,
        help_text="Or: seconds from now (the end stays within TT_MAX_ENV_LIFETIME of the start).",
    )

    class Meta:
        # Exactly one of the two.
        schema_extra = {"minProperties": 1, "maxProperties": 1}

    def get_fields(self):
        fields = super().get_fields()
        fields["lifetime"] = _lifetime(fields["lifetime"])
        return fields


def _lifetime(field: Integer) -> Integer:
    return Integer(min_value=limits.LIFETIME_MIN, max_value=limits.lifetime_max(), unit="seconds",
                   required=False, help_text=field.help_text)


class EnvClone(StrictSerializer):
    count = Integer(min_value=1, max_value=COUNT_MAX, required=False,
                    help_text=f"How many clones (1-{COUNT_MAX}, default 1), each an Env of its own.")
    name = Name(required=False, help_text="The clone's name (one clone), or its prefix: "
                "`<name>-1`, `<name>-2`, … Default `<source>-clone-<n>`.")
    lifetime = Integer(
        min_value=limits.LIFETIME_MIN, max_value=limits.lifetime_max(), unit="seconds", required=False,
        help_text="Seconds from now (at most TT_MAX_ENV_LIFETIME); default TT_DEFAULT_ENV_LIFETIME.",
    )

    def get_fields(self):
        fields = super().get_fields()
        fields["lifetime"] = _lifetime(fields["lifetime"])
        return fields


class PeerRequest(StrictSerializer):
    env = Text(
        rule=limits.ENV_REF_RULE, pattern=limits.ENV_REF_PATTERN, max_length=limits.ENV_REF_MAX,
        help_text="The other Env as owner/name (its owner tells you). Peering it takes "
        "both owners: yours asks, theirs accepts by asking back.",
    )


class IdleSuspend(StrictSerializer):
    minutes = Integer(min_value=limits.IDLE_SUSPEND_MIN, max_value=limits.IDLE_SUSPEND_MAX, unit="minutes",
                      allow_null=True, help_text="Sleep after this many idle minutes; null: never.")


class DenyOutgoing(StrictSerializer):
    deny = Boolean(help_text="true: cut the Env's VMs off beyond the node network.")


# --- sharing (envs/sharing.py) -------------------------------------------------------------

_ROLE_RULE = f"must be one of {', '.join(EnvMember.Role.values)}"


def _role_field(**kwargs) -> serializers.ChoiceField:
    return serializers.ChoiceField(
        choices=EnvMember.Role.choices, error_messages={"invalid_choice": _ROLE_RULE, "null": _ROLE_RULE},
        help_text="viewer: sees it, its VMs, operations and console output; operator: also starts, "
        "stops, suspends, snapshots, enters its VMs (exec, files, console), extends it; admin: also "
        "adds and destroys VMs, ports, peerings, sharing, clones and destroys it.", **kwargs)


class EnvMemberSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True,
                                        help_text="The user it is shared with (null: a group).")
    group = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True,
                                         help_text="The group it is shared with (null: a user).")
    role = _role_field(read_only=True)
    granted_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = EnvMember
        fields = ["id", "user", "group", "role", "granted_by", "granted_at"]
        read_only_fields = fields


class MemberAdd(StrictSerializer):
    user = Text(rule="must be a username", pattern=limits.PRINTABLE_PATTERN, max_length=limits.USERNAME_MAX,
                required=False, help_text="Share it with this user (by username)...")
    group = Text(rule="must be a group name", pattern=limits.PRINTABLE_PATTERN, max_length=150,
                 required=False, help_text="...or with every member of this group (by name).")
    role = _role_field()

    class Meta:
        # A user or a group, and the role.
        schema_extra = {"minProperties": 2, "maxProperties": 2}

    def validate(self, attrs):
        if ("user" in attrs) == ("group" in attrs):
            raise serializers.ValidationError({"user": "give a user or a group (one of them)"})
        return attrs


class MemberChange(StrictSerializer):
    role = _role_field()


class EnvTransfer(StrictSerializer):
    owner = Text(rule="must be a username", pattern=limits.PRINTABLE_PATTERN, max_length=limits.USERNAME_MAX,
                 help_text="The new owner's username: a member of the Env, whose quota takes all it holds.")


# --- blueprints (envs/blueprints.py) -----------------------------------------------------

_BLUEPRINT_TEXT_RULE = "must be an Env file (tt.yaml): YAML text of at most 65536 characters"
_DESCRIPTION_RULE = f"must be at most {limits.BLUEPRINT_DESCRIPTION_MAX} characters of text"


class BlueprintSerializer(serializers.HyperlinkedModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:blueprint-detail")
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    env_name = serializers.CharField(read_only=True, help_text="The name its file gives the Env: a launch's "
                                     "default.")
    shared_with_users = serializers.SlugRelatedField(
        slug_field="username", many=True, read_only=True, help_text="Users it is shared with (read-only).")
    shared_with_groups = serializers.SlugRelatedField(
        slug_field="name", many=True, read_only=True, help_text="Groups it is shared with (read-only).")
    mine = serializers.SerializerMethodField(help_text="Whether you own it (only the owner changes it).")

    class Meta:
        model = Blueprint
        fields = ["id", "url", "name", "owner", "description", "text", "env_name", "published",
                  "shared_with_users", "shared_with_groups", "mine", "created_at", "updated_at"]
        read_only_fields = fields

    @extend_schema_field(serializers.BooleanField())
    def get_mine(self, blueprint) -> bool:
        request = self.context.get("request")
        return bool(request and blueprint.owner_id == request.user.pk)


def _blueprint_text(**kwargs) -> Text:
    return Text(rule=_BLUEPRINT_TEXT_RULE, pattern=limits.QUERY_TEXT_PATTERN, max_length=65536,
                help_text="The Env file's YAML text (its schema: GET /api/schema/envfile.json); checked "
                "as POST /api/envs/?format=envfile checks it: its problems are refused with 422, each with "
                "its line.", **kwargs)


class BlueprintCreate(StrictSerializer):
    text = _blueprint_text()
    name = Name(required=False, help_text="Unique among your blueprints; default: the file's `name`.")
    description = Text(rule=_DESCRIPTION_RULE, pattern=limits.QUERY_TEXT_PATTERN,
                       max_length=limits.BLUEPRINT_DESCRIPTION_MAX, required=False, allow_blank=True)
    published = Boolean(required=False, help_text="Publish it to everyone: staff holding "
                        "envs.publish_blueprint only (403 otherwise).")


class BlueprintUpdate(StrictSerializer):
    text = _blueprint_text(required=False)
    name = Name(required=False, help_text="Unique among the owner's blueprints.")
    description = Text(rule=_DESCRIPTION_RULE, pattern=limits.QUERY_TEXT_PATTERN,
                       max_length=limits.BLUEPRINT_DESCRIPTION_MAX, required=False, allow_blank=True)
    published = Boolean(required=False, help_text="Publish it to everyone (or withdraw it): staff holding "
                        "envs.publish_blueprint only (403 otherwise).")


class BlueprintShare(StrictSerializer):
    users = serializers.ListField(
        child=Text(rule="must be a username", pattern=limits.PRINTABLE_PATTERN,
                   max_length=limits.USERNAME_MAX),
        required=False, max_length=1000,
        help_text="Exactly the users it is shared with, by username ([]: none; left out: unchanged).")
    groups = serializers.ListField(
        child=Text(rule="must be a group name", pattern=limits.PRINTABLE_PATTERN, max_length=150),
        required=False, max_length=1000,
        help_text="Exactly the groups it is shared with, by name ([]: none; left out: unchanged).")


class BlueprintLaunch(StrictSerializer):
    name = Name(required=False, help_text="The new Env's name (default: the one its file gives); unique "
                "among your live Envs.")
