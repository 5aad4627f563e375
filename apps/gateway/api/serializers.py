"""Serializers of the API key management API."""

from __future__ import annotations

from rest_framework import serializers

from apps.gateway.models import ApiKey
from apps.registry.models import Clearance


class ApiKeySerializer(serializers.ModelSerializer[ApiKey]):
    prefix = serializers.CharField(source="display_prefix", read_only=True)
    active = serializers.BooleanField(source="is_active", read_only=True)

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "allowed_aliases",
            "allowed_workspace_ids",
            "max_level",
            "created_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
            "revoked_reason",
            "platform_issued",
            "active",
        ]
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer[None]):
    name = serializers.CharField(max_length=100)
    # Checked against the ministry's own grants: a model it is not granted and one that does not
    # exist are refused with the same message.
    allowed_aliases = serializers.ListField(
        child=serializers.SlugField(max_length=100), required=False, default=list, max_length=100
    )
    # /v1/search only: shared workspaces of the ministry (empty = all of them up to max_level).
    # Each id is checked under the ministry's scope: another ministry's id is refused like a missing one.
    allowed_workspace_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, default=list, max_length=100
    )
    max_level = serializers.ChoiceField(choices=Clearance.choices, default=Clearance.LEVEL_1)
    # Required: every key expires (the service enforces GENNAI_API_KEY_MAX_LIFETIME_DAYS).
    expires_at = serializers.DateTimeField(
        help_text="Required. At most GENNAI_API_KEY_MAX_LIFETIME_DAYS (default 90) days ahead."
    )


class ApiKeyCreatedSerializer(ApiKeySerializer):
    """The created key, with its plaintext: returned once, never again."""

    key = serializers.CharField(read_only=True, help_text="gn-… (shown only in this response)")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields
