"""Register the local CPU model server behind ``standard-chat`` (used by `make run`). Idempotent."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from apps.registry.services import local_server_register


class Command(BaseCommand):
    help = "Register a local OpenAI-compatible model server as deployment + standard-chat alias."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8081")
        parser.add_argument("--served-model-name", default="smollm2-135m-instruct")
        parser.add_argument("--deployment", default="local-cpu-smollm2")
        parser.add_argument("--alias", default="standard-chat")

    def handle(self, *args: Any, **options: Any) -> None:
        alias, deployment = local_server_register(
            vendor={"name": "Hugging Face (SmolLM2)", "website": "https://huggingface.co/HuggingFaceTB"},
            model={
                "name": "smollm2-135m-instruct",
                "family": "SmolLM2",
                "version": "135M-Instruct-Q4_1",
                "license": "Apache-2.0",
                "parameter_count": 135_000_000,
                "context_window": 2048,
                "kind": "chat",
            },
            deployment_name=options["deployment"],
            base_url=options["base_url"],
            served_model_name=options["served_model_name"],
            max_concurrency=4,
            alias={
                "name": options["alias"],
                "display_name_ja": "標準チャット",
                "display_name_en": "Standard chat",
            },
            reason="make run: local CPU model",
        )
        self.stdout.write(f"alias {alias.name} → {deployment.name} ({deployment.base_url})")
