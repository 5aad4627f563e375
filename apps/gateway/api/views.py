"""Management API for API keys (``/gateway/api/keys/``), ministry admins only; in /api/schema/."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.gateway.models import ApiKey
from apps.gateway.permissions import IsMinistryAdmin
from apps.gateway.selectors import api_key_list, get_api_key_for_actor
from apps.gateway.services import api_key_create, api_key_revoke

from .serializers import ApiKeyCreatedSerializer, ApiKeyCreateSerializer, ApiKeySerializer


class ApiKeyListCreate(generics.ListAPIView[ApiKey]):
    """List the ministry's API keys, or create one (its plaintext is in the response only)."""

    permission_classes = [IsMinistryAdmin]
    serializer_class = ApiKeySerializer

    def get_queryset(self) -> Any:
        return api_key_list(ministry_id=self.request.membership.ministry_id)

    @extend_schema(request=ApiKeyCreateSerializer, responses={201: ApiKeyCreatedSerializer})
    def post(self, request: Request) -> Response:
        data = ApiKeyCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            key, plaintext = api_key_create(
                actor=request.user,
                ministry=request.membership.ministry,
                name=data.validated_data["name"],
                aliases=data.validated_data["allowed_aliases"],
                max_level=data.validated_data["max_level"],
                expires_at=data.validated_data["expires_at"],
                workspace_ids=data.validated_data["allowed_workspace_ids"],
            )
        except DjangoValidationError as exc:
            raise ValidationError(exc.messages) from exc
        body = {**ApiKeySerializer(key).data, "key": plaintext}  # shape: ApiKeyCreatedSerializer
        response = Response(body, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response


class ApiKeyRevoke(APIView):
    """Revoke a key of the ministry (idempotent). Another ministry's key is a 404."""

    permission_classes = [IsMinistryAdmin]

    @extend_schema(request=None, responses={200: ApiKeySerializer})
    def post(self, request: Request, key_id: int) -> Response:
        key = get_api_key_for_actor(actor=request.membership, key_id=key_id)
        key = api_key_revoke(actor=request.user, key=key)
        return Response(ApiKeySerializer(key).data)
