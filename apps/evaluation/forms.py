"""Forms of the evaluation screens (validation only; writes go through the services)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from apps.registry.models import Alias, Clearance, Deployment

from .models import ArenaOutcome, RunCandidate
from .stores import MINISTRY, PLATFORM, store_for

MAX_UPLOAD_BYTES = 5 * 1024 * 1024


class SuiteForm(forms.Form):
    owner = forms.ChoiceField(
        label=_("所有者"),
        choices=[
            (MINISTRY, _("自府省庁（この府省庁の調達担当だけが見られます）")),
            (PLATFORM, _("プラットフォーム（全府省庁の調達担当が見られます）")),
        ],
        initial=MINISTRY,
        required=False,
    )
    name = forms.CharField(label=_("名称"), max_length=200)
    description = forms.CharField(label=_("説明"), required=False, widget=forms.Textarea(attrs={"rows": 2}))
    level = forms.TypedChoiceField(label=_("機密性"), choices=Clearance.choices, coerce=int, initial=1)

    def clean_owner(self) -> str:
        return str(self.cleaned_data.get("owner") or PLATFORM)


class ImportForm(forms.Form):
    file = forms.FileField(label=_("JSONL または CSV ファイル"))

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(_("ファイルは5MBまでです。"))
        return upload


class RunForm(forms.Form):
    deployments = forms.ModelMultipleChoiceField(
        label=_("候補（デプロイメント）"),
        queryset=Deployment.objects.select_related("model").filter(model__kind="chat").order_by("name"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    aliases = forms.ModelMultipleChoiceField(
        label=_("候補（エイリアス）"),
        queryset=Alias.objects.filter(kind="chat").order_by("name"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    judge = forms.ModelChoiceField(
        label=_("評価用モデル（ジャッジ）"),
        queryset=Deployment.objects.select_related("model").filter(model__kind="chat").order_by("name"),
        required=False,
    )
    max_tokens = forms.IntegerField(label=_("最大トークン数"), min_value=1, max_value=8192, initial=256)


class BenchForm(forms.Form):
    candidate = forms.ModelChoiceField(label=_("候補"), queryset=RunCandidate.objects.none())
    file = forms.FileField(label=_("inference bench --json の出力"))

    def __init__(self, *args: Any, run: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["candidate"].queryset = store_for(run).candidate.objects.filter(run=run)  # type: ignore[attr-defined]


class PromoteForm(forms.Form):
    alias = forms.ModelChoiceField(label=_("エイリアス"), queryset=Alias.objects.filter(kind="chat"))
    candidate = forms.ModelChoiceField(label=_("候補"), queryset=RunCandidate.objects.none())
    percent = forms.IntegerField(label=_("カナリアの割合（%）"), min_value=1, max_value=99, initial=10)
    max_error_rate = forms.FloatField(label=_("エラー率の上限（%）"), min_value=0.1, max_value=100, initial=5)
    max_p95_latency_ms = forms.IntegerField(label=_("p95 レイテンシ上限（ms）"), min_value=1, initial=10000)
    window_minutes = forms.IntegerField(label=_("監視期間（分）"), min_value=1, max_value=1440, initial=30)
    min_requests = forms.IntegerField(label=_("判定に必要な最小リクエスト数"), min_value=1, initial=20)
    reason = forms.CharField(label=_("変更理由"), max_length=500)

    def __init__(self, *args: Any, run: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["candidate"].queryset = store_for(run).candidate.objects.filter(run=run)  # type: ignore[attr-defined]


class ReasonForm(forms.Form):
    reason = forms.CharField(label=_("変更理由"), max_length=500)


class ArenaForm(forms.Form):
    prompt = forms.CharField(label=_("質問"), max_length=8000, widget=forms.Textarea(attrs={"rows": 4}))
    level = forms.TypedChoiceField(label=_("機密性"), choices=Clearance.choices, coerce=int, initial=1)


class VoteForm(forms.Form):
    outcome = forms.ChoiceField(choices=ArenaOutcome.choices, widget=forms.RadioSelect)
