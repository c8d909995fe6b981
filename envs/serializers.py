"""API representations of Envs, and the bodies of Env actions (Operations: operations/serializers.py)."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from envs import peering
from envs.models import Env
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

    class Meta:
        model = Env
        fields = [
            "id", "url", "name", "owner", "status", "start_at", "end_at", "seconds_left", "is_stopped",
            "deny_outgoing", "last_mgmt_at", "cooldown_remaining", "destroyed_at", "vms", "peers",
        ]
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


class PeerRequest(StrictSerializer):
    env = Text(
        rule=limits.ENV_REF_RULE, pattern=limits.ENV_REF_PATTERN, max_length=limits.ENV_REF_MAX,
        help_text="The other Env as owner/name (its owner tells you). Peering it takes "
        "both owners: yours asks, theirs accepts by asking back.",
    )


class DenyOutgoing(StrictSerializer):
    deny = Boolean(help_text="true: cut the Env's VMs off beyond the node network.")
