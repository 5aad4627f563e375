"""Register the local CPU model server behind ``standard-chat`` (used by `make run`). Idempotent."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from apps.registry.models import Alias, Deployment, Model, Vendor
from apps.registry.services import (
    alias_create,
    alias_grant,
    alias_set_routes,
    deployment_save,
    model_save,
    vendor_save,
)
from apps.tenancy.models import Ministry


class Command(BaseCommand):
    help = "Register a local OpenAI-compatible model server as deployment + standard-chat alias."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8081")
        parser.add_argument("--served-model-name", default="smollm2-135m-instruct")
        parser.add_argument("--deployment", default="local-cpu-smollm2")
        parser.add_argument("--alias", default="standard-chat")

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        vendor = Vendor.objects.filter(name="Hugging Face (SmolLM2)").first() or vendor_save(
            actor=None, name="Hugging Face (SmolLM2)", website="https://huggingface.co/HuggingFaceTB"
        )
        model = Model.objects.filter(name="smollm2-135m-instruct").first() or model_save(
            actor=None,
            vendor=vendor,
            name="smollm2-135m-instruct",
            family="SmolLM2",
            version="135M-Instruct-Q4_1",
            license="Apache-2.0",
            parameter_count=135_000_000,
            context_window=2048,
            kind="chat",
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
                max_concurrency=4,
                **fields,
            )
        elif any(getattr(deployment, k) != v for k, v in fields.items()):
            deployment = deployment_save(actor=None, deployment=deployment, **fields)
        alias = Alias.objects.filter(name=options["alias"]).first() or alias_create(
            actor=None,
            name=options["alias"],
            display_name_ja="標準チャット",
            display_name_en="Standard chat",
        )
        if alias.current_revision is None:
            alias_set_routes(
                actor=None, alias=alias, routes=[(deployment, 100)], reason="make run: local CPU model"
            )
        for ministry in Ministry.objects.filter(active=True):
            alias_grant(actor=None, ministry=ministry, alias=alias)
        self.stdout.write(f"alias {alias.name} → {deployment.name} ({deployment.base_url})")
