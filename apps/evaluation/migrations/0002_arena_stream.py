"""Chat-side streaming state of arena battles (apps.evaluation.arena_models.ArenaStream), with RLS."""

import django.db.models.deletion
from django.db import migrations, models

from apps.tenancy.operations import EnableRLS

SIDE_STATUS = [("streaming", "生成中"), ("complete", "完了"), ("interrupted", "中断"), ("error", "エラー")]


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0002_message_tokens_estimated"),
        ("evaluation", "0001_initial"),
        ("tenancy", "0004_teams"),
    ]

    operations = [
        migrations.CreateModel(
            name="ArenaStream",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("status_a", models.CharField(choices=SIDE_STATUS, default="streaming", max_length=16)),
                ("status_b", models.CharField(choices=SIDE_STATUS, default="streaming", max_length=16)),
                ("started_a_at", models.DateTimeField(blank=True, null=True)),
                ("started_b_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "battle",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="stream",
                        to="evaluation.arenabattle",
                    ),
                ),
                (
                    "conversation",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="chat.conversation",
                    ),
                ),
                (
                    "ministry",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="+", to="tenancy.ministry"
                    ),
                ),
            ],
            options={
                "ordering": ["created_at", "id"],
                "indexes": [
                    models.Index(fields=["ministry", "conversation", "id"], name="arenastream_conv_idx")
                ],
            },
        ),
        EnableRLS("ArenaStream"),
    ]
