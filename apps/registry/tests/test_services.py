"""Registry services: secret references, health records, revisions, rollback, grants, audit chain."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from apps.audit.models import AuditEvent
from apps.audit.services import audit_verify_chain
from apps.registry import services
from apps.registry.breaker import breaker
from apps.registry.models import Alias, AliasGrant, Deployment, HealthState
from apps.registry.router import RouteRefused, plan_route
from apps.registry.snapshot import current_version, get_snapshot, reset_for_tests
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import make_user

STICKY_KEYS = [f"conversation-{i}" for i in range(200)]


@pytest.fixture(autouse=True)
def clean_registry_state() -> Iterator[None]:
    reset_for_tests()
    breaker.reset()
    yield
    reset_for_tests()
    breaker.reset()


@pytest.fixture
def officer(ministries: Any) -> Any:
    return make_user("officer", ministries[0], ["staff", "procurement_officer"])


def make_deployment(
    name: str,
    url: str = "http://127.0.0.1:9",
    *,
    actor: Any = None,
    clearance: int = 2,
    kind: str = "chat",
    enabled: bool = True,
    zone: str | None = None,
) -> Deployment:
    vendor = services.vendor_save(actor=actor, name=f"Vendor {name}")
    # A person's clearance raise is only proposed (four-eyes); the reason is for the approver.
    reason = "test" if actor is not None else ""
    model = services.model_save(
        actor=actor,
        reason=reason,
        vendor=vendor,
        name=f"model-{name}",
        family="Family",
        version=name,
        license="Apache-2.0",
        context_window=8192,
        kind=kind,
        clearance=3,
    )
    extra: dict[str, Any] = {} if zone is None else {"zone": zone}  # unset: the service's default
    return services.deployment_save(
        actor=actor,
        reason=reason,
        model=model,
        name=name,
        base_url=url,
        served_model_name=f"served-{name}",
        clearance=clearance,
        enabled=enabled,
        **extra,
    )


def make_alias(
    routes: list[tuple[Deployment, int]],
    *,
    grant: list[Any] = (),  # type: ignore[assignment]
    actor: Any = None,
    name: str = "standard-chat",
) -> Alias:
    alias = services.alias_create(
        actor=actor, name=name, display_name_ja="標準チャット", display_name_en="Standard chat"
    )
    services.alias_set_routes(actor=actor, alias=alias, routes=routes, reason="initial")
    for ministry in grant:
        services.alias_grant(actor=actor, ministry=ministry, alias=alias)
    reset_for_tests()
    return alias


def chosen(ministry: Any, alias: str = "standard-chat") -> set[str]:
    """Primary deployments the router picks for many conversations (sticky keys)."""
    with ministry_scope(ministry_id=ministry.pk):
        return {plan_route(alias_name=alias, level=1, sticky_key=k).candidates[0].name for k in STICKY_KEYS}


def route_map(alias: Alias) -> dict[str, int]:
    alias.refresh_from_db()
    assert alias.current_revision is not None
    return {r.deployment.name: r.weight for r in alias.current_revision.routes.select_related("deployment")}


# --- Secret references -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["", "env:GENNAI_UPSTREAM_VENDOR_API_KEY", "env:GENNAI_UPSTREAM_A", "file:llmjp-api-key"]
)
def test_secret_ref_accepts_env_references(value: str) -> None:
    services.validate_secret_ref(value)


@pytest.mark.parametrize(
    "value",
    ["sk-live-0123456789abcdef", "env:", "env:lower", "ENV:KEY", "env:KEY extra", "vault:kv/x", "Bearer abc"],
)
def test_secret_ref_refuses_anything_that_could_be_a_secret(db: None, value: str) -> None:
    deployment = make_deployment("d1")
    with pytest.raises(ValidationError) as err:
        services.deployment_save(actor=None, deployment=deployment, secret_ref=value)
    assert "secret_ref" in err.value.message_dict
    assert Deployment.objects.get(name="d1").secret_ref == ""
    assert not AuditEvent.objects.filter(action="registry.deployment.update").exists()
    with pytest.raises(ValidationError):
        services.deployment_save(
            actor=None,
            model=deployment.model,
            name="d2",
            base_url="http://127.0.0.1:9",
            served_model_name="m",
            clearance=1,
            secret_ref=value,
        )
    assert not Deployment.objects.filter(name="d2").exists()


# --- Health records --------------------------------------------------------------------------


def test_record_health_bumps_snapshot_only_when_state_changes(
    db: None, django_capture_on_commit_callbacks: Any
) -> None:
    deployment = make_deployment("d1")
    updated_at = Deployment.objects.get(pk=deployment.pk).updated_at
    audit_count = AuditEvent.objects.count()
    version = current_version()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert services.deployment_record_health(deployment=deployment, health=HealthState.DOWN, detail="x")
    after_change = current_version()
    assert len(callbacks) == 1 and after_change != version
    assert get_snapshot().deployments[deployment.pk].healthy is False

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert not services.deployment_record_health(
            deployment=deployment, health=HealthState.DOWN, detail="y"
        )
    assert callbacks == [] and current_version() == after_change

    row = Deployment.objects.get(pk=deployment.pk)
    assert (row.health, row.health_detail) == ("down", "y") and row.health_checked_at is not None
    assert row.updated_at == updated_at  # a probe is not a configuration change
    assert AuditEvent.objects.count() == audit_count  # and not audited


def test_record_health_rejects_unknown_state(db: None) -> None:
    with pytest.raises(ValueError):
        services.deployment_record_health(deployment=make_deployment("d1"), health="fine")


# --- Revisions, rollback, router -------------------------------------------------------------


def test_weights_change_creates_revision_and_reaches_router_without_restart(
    ministries: Any, officer: Any, django_capture_on_commit_callbacks: Any
) -> None:
    a, _b = ministries
    old, new = make_deployment("current-model"), make_deployment("new-model")
    alias = make_alias([(old, 100)], grant=[a])
    assert chosen(a) == {"current-model"}
    get_snapshot()  # warm this process's snapshot, as a running web process would have it

    with django_capture_on_commit_callbacks(execute=True):
        revision = services.alias_set_routes(
            actor=officer, alias=alias, routes=[(old, 90), (new, 10)], reason="canary 10%"
        )
    assert revision.number == 2 and revision.created_by == officer
    picks = chosen(a)
    assert picks == {"current-model", "new-model"}  # the canary gets traffic, the snapshot was refreshed

    with django_capture_on_commit_callbacks(execute=True):
        services.alias_set_routes(actor=officer, alias=alias, routes=[(old, 0), (new, 100)], reason="promote")
    assert chosen(a) == {"new-model"}
    assert route_map(alias) == {"current-model": 0, "new-model": 100}

    events = AuditEvent.objects.filter(
        target_type="alias", target_id=str(alias.pk), action="registry.alias.routes"
    )
    assert [e.data["routes"] for e in events.order_by("id")] == [
        {"current-model": 100},
        {"current-model": 90, "new-model": 10},
        {"current-model": 0, "new-model": 100},
    ]
    assert events.last().actor == officer  # type: ignore[union-attr]


def test_stale_snapshot_without_commit_callbacks_is_the_reason_they_exist(ministries: Any) -> None:
    """Sanity check of the test above: without the on-commit bump, a warm snapshot stays old."""
    a, _b = ministries
    old, new = make_deployment("current-model"), make_deployment("new-model")
    alias = make_alias([(old, 100)], grant=[a])
    chosen(a)
    services.alias_set_routes(actor=None, alias=alias, routes=[(new, 100)], reason="swap")  # not committed
    assert chosen(a) == {"current-model"}


def test_rollback_restores_previous_routes(
    ministries: Any, officer: Any, django_capture_on_commit_callbacks: Any
) -> None:
    a, _b = ministries
    old, new = make_deployment("current-model"), make_deployment("new-model")
    alias = make_alias([(old, 90), (new, 10)], grant=[a])
    services.alias_set_routes(actor=officer, alias=alias, routes=[(old, 0), (new, 100)], reason="promote")

    with django_capture_on_commit_callbacks(execute=True):
        revision = services.alias_rollback(actor=officer, alias=alias, reason="latency regression")
    assert revision.number == 3 and revision.rollback_of is not None and revision.rollback_of.number == 1
    assert revision.reason == "latency regression"
    assert route_map(alias) == {"current-model": 90, "new-model": 10}
    assert chosen(a) == {"current-model", "new-model"}
    event = AuditEvent.objects.filter(action="registry.alias.rollback").get()
    assert event.actor == officer and event.data["revision"] == 3


def test_rollback_needs_history(db: None) -> None:
    alias = services.alias_create(actor=None, name="empty", display_name_ja="空", display_name_en="Empty")
    with pytest.raises(ValidationError):
        services.alias_rollback(actor=None, alias=alias)
    services.alias_set_routes(actor=None, alias=alias, routes=[(make_deployment("d1"), 1)], reason="first")
    with pytest.raises(ValidationError):
        services.alias_rollback(actor=None, alias=alias)


@pytest.mark.parametrize(
    ("weights", "reason"),
    [([], "r"), ([0], "r"), ([1001], "r"), ([50], "  ")],
    ids=["no-routes", "all-zero", "too-heavy", "no-reason"],
)
def test_set_routes_validation(db: None, weights: list[int], reason: str) -> None:
    deployment = make_deployment("d1")
    alias = services.alias_create(actor=None, name="a1", display_name_ja="a", display_name_en="a")
    with pytest.raises(ValidationError):
        services.alias_set_routes(
            actor=None, alias=alias, routes=[(deployment, w) for w in weights], reason=reason
        )
    assert not alias.revisions.exists()


def test_set_routes_refuses_a_deployment_of_another_kind(db: None) -> None:
    embedder = make_deployment("embedder", kind="embedding")
    alias = services.alias_create(actor=None, name="a1", display_name_ja="a", display_name_en="a")
    with pytest.raises(ValidationError):
        services.alias_set_routes(actor=None, alias=alias, routes=[(embedder, 1)], reason="r")


# --- Grants ----------------------------------------------------------------------------------


def test_grant_and_revoke_are_idempotent_audited_and_gate_the_router(
    ministries: Any, officer: Any, django_capture_on_commit_callbacks: Any
) -> None:
    a, b = ministries
    alias = make_alias([(make_deployment("d1"), 1)], grant=[a])
    with pytest.raises(RouteRefused):
        chosen(b)
    with django_capture_on_commit_callbacks(execute=True):
        services.alias_grant(actor=officer, ministry=b, alias=alias)
        services.alias_grant(actor=officer, ministry=b, alias=alias)
    assert chosen(b) == {"d1"}
    with ministry_scope(ministry_id=b.pk):
        assert AliasGrant.objects.filter(alias=alias).count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert services.alias_revoke(actor=officer, ministry=b, alias=alias)
        assert not services.alias_revoke(actor=officer, ministry=b, alias=alias)
    with pytest.raises(RouteRefused):
        chosen(b)
    assert chosen(a) == {"d1"}
    actions = list(
        AuditEvent.objects.filter(actor=officer, target_type="alias").values_list("action", "ministry_id")
    )
    assert actions == [("registry.alias.grant", b.pk), ("registry.alias.revoke", b.pk)]


def test_audit_chain_intact_after_a_full_swap(ministries: Any, officer: Any) -> None:
    a, b = ministries
    old = make_deployment("current-model", actor=officer)
    new = make_deployment("new-model", actor=officer)
    alias = make_alias([(old, 100)], grant=[a, b], actor=officer)
    services.alias_set_routes(actor=officer, alias=alias, routes=[(old, 90), (new, 10)], reason="canary")
    services.alias_set_routes(actor=officer, alias=alias, routes=[(old, 0), (new, 100)], reason="full")
    services.alias_rollback(actor=officer, alias=alias)
    services.alias_revoke(actor=officer, ministry=b, alias=alias)
    services.deployment_save(actor=officer, deployment=new, secret_ref="env:GENNAI_UPSTREAM_NEW_MODEL_KEY")
    assert audit_verify_chain() == (True, None)
    actions = list(AuditEvent.objects.filter(actor=officer).values_list("action", flat=True))
    assert actions.count("registry.alias.routes") == 3 and actions.count("registry.alias.rollback") == 1
    assert "registry.deployment.update" in actions
