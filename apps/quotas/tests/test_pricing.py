"""Costs in yen from registry prices: per 1M tokens, or by GPU-hour share on-prem."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from apps.quotas.pricing import cost_yen, gpu_share_cost, model_name_for
from apps.quotas.services import usage_record_create
from apps.registry import snapshot
from apps.registry.forms import DeploymentForm, ModelEntryForm
from apps.registry.models import Deployment, Model, Vendor
from apps.tenancy.scope import ministry_scope


@pytest.fixture
def priced(db: None) -> dict[str, Any]:
    vendor = Vendor.objects.create(name="価格ベンダー")
    external = Model.objects.create(
        vendor=vendor,
        name="cloud-model",
        family="Cloud",
        version="1",
        license="commercial",
        context_window=8192,
        clearance=1,
        price_input_per_1m=Decimal("150"),
        price_output_per_1m=Decimal("600"),
    )
    onprem = Model.objects.create(
        vendor=vendor,
        name="llm-jp-4-8b",
        family="LLM-jp-4",
        version="8B",
        license="Apache-2.0",
        context_window=8192,
        clearance=2,
        price_input_per_1m=Decimal("999"),  # ignored: the deployment has a GPU-hour price
        price_output_per_1m=Decimal("999"),
    )
    api = Deployment.objects.create(
        model=external, name="cloud-api", base_url="https://api.example.com", clearance=1, zone="external"
    )
    gpu = Deployment.objects.create(
        model=onprem,
        name="llmjp-onprem",
        base_url="http://127.0.0.1:8000",
        clearance=2,
        gpu_hour_yen=Decimal("720"),
        gpu_count=Decimal("2"),
        throughput_tokens_per_s=400,
    )
    # Without a throughput the GPU-hour price cannot be shared: per-token prices apply.
    unmeasured = Deployment.objects.create(
        model=onprem, name="llmjp-new", base_url="http://vllm2:8000", clearance=2, gpu_hour_yen=Decimal("720")
    )
    snapshot.reset_for_tests()
    return {"api": api, "gpu": gpu, "unmeasured": unmeasured}


def test_per_token_price(priced: dict[str, Any]) -> None:
    # 1,000 × 150 / 1e6 + 500 × 600 / 1e6 = 0.15 + 0.30
    cost = cost_yen(deployment_id=priced["api"].pk, prompt_tokens=1000, completion_tokens=500)
    assert cost == Decimal("0.4500")
    assert cost_yen(model_name="cloud-model", prompt_tokens=1000, completion_tokens=500) == cost
    assert (
        cost_yen(deployment_id=priced["unmeasured"].pk, prompt_tokens=1_000_000, completion_tokens=0) == 999
    )


def test_gpu_hour_share(priced: dict[str, Any]) -> None:
    # 1,440 tokens / 400 tok/s = 3.6 s = 0.001 h of 2 GPUs at 720 yen → 1.44 yen
    cost = cost_yen(deployment_id=priced["gpu"].pk, prompt_tokens=1000, completion_tokens=440)
    assert cost == Decimal("1.4400")
    # A full hour at the measured throughput costs exactly the GPUs' hour.
    assert cost_yen(deployment_id=priced["gpu"].pk, prompt_tokens=0, completion_tokens=400 * 3600) == 1440
    assert gpu_share_cost(
        gpu_hour_yen=Decimal("500"), gpu_count=Decimal("0.5"), throughput_tokens_per_s=1000, tokens=36_000
    ) == Decimal("2.5000")
    with pytest.raises(ValueError):
        gpu_share_cost(gpu_hour_yen=Decimal(1), gpu_count=Decimal(1), throughput_tokens_per_s=0, tokens=1)


def test_unknown_costs_nothing_and_rounds_half_up(priced: dict[str, Any]) -> None:
    assert cost_yen(deployment_id=999_999, prompt_tokens=10, completion_tokens=10) == 0
    assert cost_yen(model_name="no-such-model", prompt_tokens=10, completion_tokens=10) == 0
    assert cost_yen(prompt_tokens=10, completion_tokens=10) == 0
    # 1 token × 150 / 1e6 = 0.00015 → 0.0002 (half up at 4 places)
    assert cost_yen(model_name="cloud-model", prompt_tokens=1, completion_tokens=0) == Decimal("0.0002")
    assert model_name_for(deployment_id=priced["gpu"].pk) == "llm-jp-4-8b"
    assert model_name_for(deployment_id=None) == ""


def test_usage_record_create_fills_model_and_cost(
    ministries: tuple[Any, Any], priced: dict[str, Any]
) -> None:
    a, _ = ministries
    with ministry_scope(ministry_id=a.pk):
        record = usage_record_create(
            alias_name="standard-chat",
            status="ok",
            deployment_id=priced["gpu"].pk,
            prompt_tokens=1000,
            completion_tokens=440,
            feature="rag",
        )
        explicit = usage_record_create(
            alias_name="standard-chat",
            status="ok",
            deployment_id=priced["api"].pk,
            prompt_tokens=1000,
            cost_yen=Decimal("7.5"),
            model_name="given",
        )
        record.refresh_from_db()
    assert (record.feature, record.model_name, record.cost_yen) == ("rag", "llm-jp-4-8b", Decimal("1.4400"))
    assert (explicit.model_name, explicit.cost_yen) == ("given", Decimal("7.5"))


def test_registry_forms_edit_prices(priced: dict[str, Any]) -> None:
    model = Model.objects.get(name="cloud-model")
    data = {
        "vendor": model.vendor_id,
        "name": model.name,
        "family": model.family,
        "version": model.version,
        "license": model.license,
        "kind": "chat",
        "status": "candidate",
        "clearance": "1",
        "context_window": "8192",
        "price_input_per_1m": "300.5",
        "price_output_per_1m": "1200",
    }
    form = ModelEntryForm(data=data, instance=model)
    assert form.is_valid(), form.errors
    assert form.changed_fields() == {"price_input_per_1m": Decimal("300.5"), "price_output_per_1m": 1200}
    deployment = priced["gpu"]
    base = {
        "model": deployment.model_id,
        "name": deployment.name,
        "provider": "openai_compatible",
        "base_url": deployment.base_url,
        "served_model_name": "llm-jp",
        "secret_ref": "",
        "zone": "on_prem",
        "clearance": "2",
        "max_concurrency": "16",
        "enabled": "on",
        "gpu_hour_yen": "650",
        "gpu_count": "0.5",
        "throughput_tokens_per_s": "1200",
    }
    deployment_form = DeploymentForm(data=base, instance=deployment)
    assert deployment_form.is_valid(), deployment_form.errors
    assert deployment_form.cleaned_data["gpu_count"] == Decimal("0.5")
    for field, bad in (("gpu_count", "0"), ("throughput_tokens_per_s", "0"), ("gpu_hour_yen", "-1")):
        deployment_form = DeploymentForm(data={**base, field: bad}, instance=deployment)
        assert not deployment_form.is_valid() and field in deployment_form.errors, field


def test_deployment_list_shows_the_gpu_price(priced: dict[str, Any]) -> None:
    from django.test import Client
    from django.urls import reverse
    from django.utils import translation

    from apps.tenancy.models import Ministry
    from tests.support.fixtures import make_user

    ministry, _ = Ministry.objects.get_or_create(code="digital", defaults={"name_ja": "デ", "name_en": "D"})
    client = Client()
    client.force_login(make_user("buyer", ministry, ["procurement_officer"]))
    page = client.get(reverse("registry:deployment_list")).content.decode()
    assert "GPU時間単価 720.00円 × 2.00 GPU・400 トークン/秒" in page
    assert page.count('data-testid="deployment-gpu-price"') == 2  # unmeasured: "—" tokens/s
    with translation.override("en"):
        client.cookies["django_language"] = "en"
        page = client.get(reverse("registry:deployment_list"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "GPU-hour price 720.00 yen × 2.00 GPU · 400 tokens/s" in page
