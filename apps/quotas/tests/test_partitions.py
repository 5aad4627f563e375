"""Monthly partitions of the usage ledger: routing, RLS on every partition, upkeep."""

from __future__ import annotations

import time
import uuid
import zoneinfo
from datetime import date, datetime, timedelta
from typing import Any

import psycopg
import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from apps.gateway.auth import Caller
from apps.gateway.usage import UsageMeter
from apps.quotas import journal
from apps.quotas.journal import usage_journal_drain
from apps.quotas.models import UsageRecord
from apps.quotas.partitions import (
    DEFAULT_PARTITION,
    MONTHS_AHEAD,
    MONTHS_BACK,
    PARENT,
    add_months,
    ensure_usage_partitions,
    ensure_usage_partitions_after_migrate,
    month_start,
    partition_name,
    usage_partitions,
)
from apps.tenancy.db import owner_mode
from apps.tenancy.operations import POLICY_NAME
from apps.tenancy.scope import GUC_NAME, ministry_scope

TOKYO = zoneinfo.ZoneInfo(settings.TIME_ZONE)


def local_midnight(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=TOKYO)


def record(ministry: Any, at: datetime) -> UsageRecord:
    with ministry_scope(ministry_id=ministry.pk):
        row: UsageRecord = UsageRecord.objects.create(
            ministry=ministry, alias_name="standard-chat", status="ok", prompt_tokens=1, created_at=at
        )
    return row


def home(record_id: int, ministry_id: int) -> str:
    """The partition that physically holds the row (read through the parent, in its ministry)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, %s, true)", [GUC_NAME, str(ministry_id)])
        cursor.execute(f"SELECT tableoid::regclass::text FROM {PARENT} WHERE id = %s", [record_id])
        return str(cursor.fetchone()[0])


def direct_count(table: str, record_id: int, ministry_id: int | None) -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        setting = "" if ministry_id is None else str(ministry_id)
        cursor.execute("SELECT set_config(%s, %s, true)", [GUC_NAME, setting])
        cursor.execute(f'SELECT count(*) FROM "{table}" WHERE id = %s', [record_id])
        return int(cursor.fetchone()[0])


@pytest.mark.django_db
def test_migrate_partitioned_the_ledger_two_months_back_to_twelve_ahead() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE relname = %s", [PARENT])
        assert cursor.fetchone() == ("p",)
        cursor.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
            "AND contype IN ('p', 'u') ORDER BY contype",
            [PARENT],
        )
        assert [row[0] for row in cursor.fetchall()] == [
            "PRIMARY KEY (id, created_at)",
            "UNIQUE (ministry_id, request_id, created_at)",
        ]
    names = [name for name, _bound in usage_partitions()]
    this_month = month_start(timezone.localdate())
    expected = [partition_name(add_months(this_month, n)) for n in range(-MONTHS_BACK, MONTHS_AHEAD + 1)]
    assert set(expected) <= set(names)
    assert names[-1] == DEFAULT_PARTITION
    with owner_mode():
        assert ensure_usage_partitions_after_migrate() == [], "post_migrate created them all already"


def test_rows_land_in_their_months_partition_in_japan_time(ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    this_month = month_start(timezone.localdate())
    boundary = local_midnight(this_month)  # 15:00 UTC on the previous month's last day
    after = record(a, boundary + timedelta(minutes=30))
    before = record(a, boundary - timedelta(minutes=30))
    far = record(a, local_midnight(add_months(this_month, 60)))
    assert home(after.pk, a.pk) == partition_name(this_month)
    assert home(before.pk, a.pk) == partition_name(add_months(this_month, -1))
    assert home(far.pk, a.pk) == DEFAULT_PARTITION, "no partition yet: DEFAULT takes it, nothing fails"
    with ministry_scope(ministry_id=a.pk):
        assert UsageRecord.objects.filter(pk__in=[after.pk, before.pk, far.pk]).count() == 3


def test_a_partition_read_directly_is_still_isolated_by_rls(ministries: tuple[Any, Any]) -> None:
    """The app role may name a partition in SQL; the partition's own forced RLS still hides
    other ministries' rows, and refuses writes into another ministry."""
    a, b = ministries
    row = record(a, timezone.now())
    table = partition_name(month_start(timezone.localdate()))
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolbypassrls, rolsuper FROM pg_roles WHERE rolname = current_user")
        assert cursor.fetchone() == (False, False)
    assert direct_count(table, row.pk, a.pk) == 1
    assert direct_count(table, row.pk, b.pk) == 0
    assert direct_count(table, row.pk, None) == 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, %s, true)", [GUC_NAME, str(b.pk)])
        cursor.execute(f'UPDATE "{table}" SET prompt_tokens = 0 WHERE id = %s', [row.pk])
        assert cursor.rowcount == 0
        cursor.execute(f'DELETE FROM "{table}" WHERE id = %s', [row.pk])
        assert cursor.rowcount == 0
    with pytest.raises(DatabaseError) as excinfo, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, %s, true)", [GUC_NAME, str(b.pk)])
        cursor.execute(
            f'INSERT INTO "{table}" (id, ministry_id, alias_name, endpoint, feature, model_name, level, '
            "prompt_tokens, prompt_tokens_estimated, completion_tokens, latency_ms, status, cost_yen, "
            "detail, created_at) "
            "VALUES (-1, %s, 'x', 'chat', 'chat', '', 1, 0, false, 0, 0, 'ok', 0, '', now())",
            [a.pk],
        )
    assert isinstance(excinfo.value.__cause__, psycopg.errors.InsufficientPrivilege)
    assert direct_count(table, row.pk, a.pk) == 1


def test_creating_a_month_moves_its_rows_out_of_default(ministries: tuple[Any, Any]) -> None:
    a, b = ministries
    month = add_months(month_start(timezone.localdate()), 60)
    row = record(a, local_midnight(month) + timedelta(days=3))
    other = record(b, local_midnight(add_months(month, 1)) + timedelta(days=1))
    assert home(row.pk, a.pk) == DEFAULT_PARTITION
    with owner_mode():
        assert ensure_usage_partitions(start=month, months=1) == [partition_name(month)]
        assert ensure_usage_partitions(start=month, months=1) == []  # idempotent
    assert home(row.pk, a.pk) == partition_name(month)
    assert home(other.pk, b.pk) == DEFAULT_PARTITION, "another month's row stays where it was"
    assert direct_count(partition_name(month), row.pk, b.pk) == 0
    with connection.cursor() as cursor:
        for table in (partition_name(month), DEFAULT_PARTITION):
            cursor.execute(
                "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = %s", [table]
            )
            assert cursor.fetchone() == (True, True), table
            cursor.execute(
                "SELECT 1 FROM pg_policies WHERE tablename = %s AND policyname = %s", [table, POLICY_NAME]
            )
            assert cursor.fetchone() is not None, table


def test_usage_partitions_command_creates_months_ahead(db: None) -> None:
    from io import StringIO

    first = add_months(month_start(timezone.localdate()), 40)
    out = StringIO()
    call_command("usage_partitions", "--months", "3", "--start", f"{first:%Y-%m}", stdout=out)
    created = [partition_name(add_months(first, n)) for n in range(3)]
    assert [line.removeprefix("created ") for line in out.getvalue().splitlines()[:3]] == created
    assert set(created) <= {name for name, _bound in usage_partitions()}
    out = StringIO()
    call_command("usage_partitions", "--months", "3", "--start", f"{first:%Y-%m}", stdout=out)
    assert "created" not in out.getvalue()


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Any:
    client = redis.Redis.from_url(settings.REDIS_URL)
    name = f"test:usage:{uuid.uuid4().hex}"
    monkeypatch.setattr(journal, "STREAM", name)
    monkeypatch.setattr(journal, "DEAD_LETTERS", name + ":dead")
    yield client
    client.delete(name, name + ":dead")


def test_a_request_across_midnight_of_a_month_end_stays_one_row(
    stream: redis.Redis, ministries: tuple[Any, Any]
) -> None:
    """Every entry of a request carries its start time (the upsert key includes created_at):
    settled, then finished after the month changed, then re-drained, it is one row in the
    month it started."""
    a, _ = ministries
    this_month = month_start(timezone.localdate())
    caller = Caller(
        ministry_id=a.pk,
        api_key_id=None,
        user_id=None,
        allowed_aliases=frozenset(),
        max_level=3,
        default_level=1,
    )
    meter = UsageMeter(
        caller=caller, alias_name="standard-chat", level=1, endpoint="chat", started=time.perf_counter()
    )
    meter.created_at = local_midnight(this_month).timestamp() - 1  # 23:59:59 on the last day
    started = meter.entry("")
    stream.xadd(journal.STREAM, {"k": b"s", "r": started.encode()})
    assert usage_journal_drain(settle_after=0).settled == 1
    meter.completion_tokens = 7
    finished = meter.entry("ok")
    assert finished.created_at == started.created_at
    for _ in range(2):  # a late finish, then a drainer re-reading it
        stream.xadd(journal.STREAM, {"k": b"f", "r": finished.encode()})
        usage_journal_drain()
    with ministry_scope(ministry_id=a.pk):
        [row] = UsageRecord.objects.filter(request_id=uuid.UUID(meter.request_id))
    assert (row.status, row.completion_tokens) == ("ok", 7)
    assert home(row.pk, a.pk) == partition_name(add_months(this_month, -1))


# --- Daily upkeep: months ahead, retention (usage_partitions_maintain) ------------------------


def test_upkeep_is_scheduled_daily_by_beat() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["quotas-usage-partitions"]
    assert entry["task"] == "quotas.usage_partitions_maintain"


def test_upkeep_runs_only_on_the_owner_role_maintenance_queue() -> None:
    """DDL needs the owner role: the task must never land on an ordinary (application-role) worker."""
    from gennai.celery import app

    route = app.amqp.router.route({}, "quotas.usage_partitions_maintain")
    assert route["queue"].name == "maintenance"
    assert app.amqp.router.route({}, "quotas.usage_rollup_recent")["queue"].name != "maintenance"


def test_retention_cutoff_rules() -> None:
    from django.core.exceptions import ImproperlyConfigured

    from apps.quotas.partitions import retention_cutoff

    assert retention_cutoff(today=date(2026, 12, 7), retention_months=24) == date(2024, 12, 1)
    assert retention_cutoff(today=date(2026, 12, 7), retention_months=0) is None
    with pytest.raises(ImproperlyConfigured):
        retention_cutoff(today=date(2026, 12, 7), retention_months=1)


def test_upkeep_drops_months_past_retention_and_keeps_the_rest(ministries: tuple[Any, Any]) -> None:
    from apps.audit.models import AuditEvent
    from apps.quotas.partitions import usage_partitions_maintain

    a, b = ministries
    this_month = month_start(timezone.localdate())
    old_month, kept_month = add_months(this_month, -5), add_months(this_month, -4)
    with owner_mode():
        ensure_usage_partitions(start=old_month, months=2)
    old = record(a, local_midnight(old_month) + timedelta(days=2))
    kept = record(a, local_midnight(kept_month) + timedelta(days=2))
    # A row of an expired month with no partition of its own sits in DEFAULT: deleted too.
    stray_month = add_months(this_month, -30)  # migrate created two months back only
    stray = record(b, local_midnight(stray_month) + timedelta(days=1))
    assert home(stray.pk, b.pk) == DEFAULT_PARTITION

    with owner_mode():
        result = usage_partitions_maintain(retention_months=4)

    assert partition_name(old_month) in result.dropped
    assert partition_name(kept_month) not in result.dropped
    names = [name for name, _bound in usage_partitions()]
    assert partition_name(old_month) not in names and partition_name(kept_month) in names
    assert partition_name(add_months(this_month, MONTHS_AHEAD)) in names, "twelve months ahead exist"
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [partition_name(old_month)])
        assert cursor.fetchone() == (None,), "detached and dropped, not left behind"
    with ministry_scope(ministry_id=a.pk):
        assert not UsageRecord.objects.filter(pk=old.pk).exists()
        assert UsageRecord.objects.filter(pk=kept.pk).exists()
    with ministry_scope(ministry_id=b.pk):
        assert not UsageRecord.objects.filter(pk=stray.pk).exists()
    assert result.default_rows_deleted == 1
    drops = AuditEvent.objects.filter(
        action="quotas.usage_partition_drop", target_id=partition_name(old_month)
    )
    assert drops.count() == 1 and drops.get().data["retention_months"] == 4
    with owner_mode():
        again = usage_partitions_maintain(retention_months=4)
    assert again.dropped == [] and again.default_rows_deleted == 0, "idempotent"


def test_retention_zero_keeps_everything(db: None) -> None:
    from apps.quotas.partitions import usage_partitions_maintain

    this_month = month_start(timezone.localdate())
    with owner_mode():
        ensure_usage_partitions(start=add_months(this_month, -40), months=1)
        result = usage_partitions_maintain(retention_months=0)
    assert result.dropped == [] and result.cutoff is None
    assert partition_name(add_months(this_month, -40)) in dict(usage_partitions())


def test_a_failing_upkeep_alerts_the_platform_admins(
    ministries: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.console.models import Notification
    from apps.quotas import partitions
    from apps.quotas.tasks import usage_partitions_maintain_task
    from tests.support.fixtures import make_user

    a, _ = ministries
    admin = make_user("plat-upkeep", a, ["staff", "platform_admin"])

    def refuse(**_: Any) -> None:
        raise DatabaseError("permission denied for table quotas_usagerecord")

    monkeypatch.setattr(partitions, "usage_partitions_maintain", refuse)
    with pytest.raises(DatabaseError):
        usage_partitions_maintain_task()
    with ministry_scope(ministry_id=a.pk):
        [notice] = Notification.objects.filter(recipient=admin)
    assert notice.kind == "usage_partitions_failed" and notice.data == {"error": "DatabaseError"}
