"""A deployment is labelled on-prem only for an on-prem host (GENNAI_UPSTREAM_ONPREM_HOSTS).

Routing an alias to an on-prem deployment needs no second approval, so the zone
may not be whatever its author types: an allowlisted vendor host registered as
"on-prem" would otherwise take traffic with one person's say.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from apps.registry import services
from apps.registry.egress import onprem_policy
from apps.registry.models import DeploymentZone
from apps.registry.tests.test_services import clean_registry_state, make_deployment  # noqa: F401

pytestmark = pytest.mark.django_db

SPLIT = override_settings(
    GENNAI_UPSTREAM_ALLOWED_HOSTS=["127.0.0.0/8", "api.vendor.example", "*.gpu.gov.example"],
    GENNAI_UPSTREAM_ONPREM_HOSTS=["127.0.0.0/8", "*.gpu.gov.example"],
)


def test_lists_url_matches_names_wildcards_and_ip_literals_without_resolving() -> None:
    with SPLIT:
        policy = onprem_policy()
        assert policy.lists_url("http://127.0.0.1:8000/v1")
        assert policy.lists_url("https://llmjp.gpu.gov.example/v1")
        assert not policy.lists_url("https://api.vendor.example/v1")
        assert not policy.lists_url("https://localhost/v1")  # a name is not checked against CIDRs


def test_unset_the_onprem_hosts_are_the_allowlist() -> None:
    with override_settings(
        GENNAI_UPSTREAM_ALLOWED_HOSTS=["api.vendor.example"], GENNAI_UPSTREAM_ONPREM_HOSTS=[]
    ):
        assert onprem_policy().lists_url("https://api.vendor.example/v1")


def test_a_vendor_host_cannot_be_created_as_onprem() -> None:
    with SPLIT:
        with pytest.raises(ValidationError) as refused:
            make_deployment("vendor-as-onprem", "https://api.vendor.example/v1", clearance=1)
        assert "zone" in refused.value.message_dict
        deployment = make_deployment("gpu-onprem", "https://llmjp.gpu.gov.example/v1", clearance=1)
        assert deployment.zone == DeploymentZone.ON_PREM


def test_a_vendor_host_is_registered_as_external() -> None:
    with SPLIT:
        deployment = make_deployment(
            "vendor-ext", "https://api.vendor.example/v1", clearance=1, zone=DeploymentZone.EXTERNAL
        )
        assert deployment.zone == DeploymentZone.EXTERNAL
        # Relabelling it on-prem, or moving an on-prem deployment to the vendor, is refused.
        with pytest.raises(ValidationError):
            services.deployment_save(actor=None, deployment=deployment, zone=DeploymentZone.ON_PREM)
        onprem = make_deployment("gpu-2", "https://b.gpu.gov.example/v1", clearance=1)
        with pytest.raises(ValidationError):
            services.deployment_save(actor=None, deployment=onprem, base_url="https://api.vendor.example/v1")


def test_an_unchanged_destination_is_not_rechecked() -> None:
    """Editing another field of a deployment saved before the list was tightened still works."""
    deployment = make_deployment("legacy", "http://127.0.0.1:9", clearance=1)
    with override_settings(GENNAI_UPSTREAM_ONPREM_HOSTS=["*.gpu.gov.example"]):
        saved = services.deployment_save(actor=None, deployment=deployment, max_concurrency=4)
    assert saved.max_concurrency == 4


def test_the_refusal_reads_in_english() -> None:
    from django.utils import translation

    with SPLIT, translation.override("en"), pytest.raises(ValidationError) as refused:
        make_deployment("vendor-en", "https://api.vendor.example/v1", clearance=1)
    assert "not an on-prem host" in refused.value.message_dict["zone"][0]
