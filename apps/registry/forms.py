"""Forms of the procurement screens. They validate input; every write goes through services."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

from apps.tenancy.models import Ministry
from gennai.forms import mark_errors, style

from .models import Alias, Deployment, Model, Vendor
from .providers.registry import load_providers
from .selectors import RouteRow
from .services import validate_secret_ref


def _formfield(field: Any, **kwargs: Any) -> Any:
    if isinstance(field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")  # Django 6 default; silences the transition warning
    return field.formfield(**kwargs)


class StyledModelForm(forms.ModelForm):  # type: ignore[type-arg]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        style(self)

    def full_clean(self) -> None:
        super().full_clean()
        mark_errors(self)

    # Optional fields whose blank means the model default: a blank submission of an
    # unchanged default is not a change (no audit entry, no save).
    blank_means_default: tuple[str, ...] = ()

    def changed_fields(self) -> dict[str, Any]:
        """Cleaned values of the model fields the user changed (what the service and audit get)."""
        model_fields = set(self._meta.fields or ())
        if self.instance.pk is None:
            return {name: self.cleaned_data[name] for name in self.fields if name in model_fields}
        return {
            name: self.cleaned_data[name]
            for name in self.changed_data
            if name in model_fields
            and not (name in self.blank_means_default and self.cleaned_data[name] == self.initial.get(name))
        }

    def service_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments for the save service (the approval reason, where the form has one)."""
        return {"reason": self.cleaned_data.get("reason", "")} if "reason" in self.fields else {}

    def add_service_error(self, exc: ValidationError) -> None:
        """Show a service's ValidationError on the matching fields (others on the form)."""
        if hasattr(exc, "error_dict"):
            for field, errors in exc.error_dict.items():
                self.add_error(field if field in self.fields else None, ValidationError(errors))
        else:
            self.add_error(None, exc)


class VendorForm(StyledModelForm):
    class Meta:
        model = Vendor
        fields = ["name", "website", "contact"]
        formfield_callback = _formfield


def _reason_field() -> forms.CharField:
    return forms.CharField(
        label=_("変更理由（承認が必要な変更のとき）"),
        max_length=500,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=_(
            "機密性2・3への引き上げは、別の調達担当またはプラットフォーム管理者の承認後に反映されます。"
            "その場合は承認者向けの理由が必要です。"
        ),
    )


class ModelEntryForm(StyledModelForm):
    reason = _reason_field()
    blank_means_default = ("price_input_per_1m", "price_output_per_1m")

    class Meta:
        model = Model
        fields = [
            "vendor",
            "name",
            "family",
            "version",
            "license",
            "kind",
            "status",
            "clearance",
            "context_window",
            "parameter_count",
            "price_input_per_1m",
            "price_output_per_1m",
        ]
        help_texts = {
            "name": _("英小文字・数字・ハイフンの識別名（例: llm-jp-4-8b-instruct）。"),
            "clearance": _("このモデルに送信してよい情報の最高の機密性。"),
            "parameter_count": _("例: 8000000000（80億）。"),
            "price_input_per_1m": _(
                "100万トークンあたりの円（税込）。GPU時間単価のないデプロイメント（外部API等）の利用料計算に使います。"
            ),
            "price_output_per_1m": _("100万トークンあたりの円（税込）。"),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("price_input_per_1m", "price_output_per_1m"):
            self.fields[name].required = False  # blank = free (e.g. on-prem, priced by GPU-hour)

    def clean_price_input_per_1m(self) -> Decimal:
        return self.cleaned_data.get("price_input_per_1m") or Decimal(0)

    def clean_price_output_per_1m(self) -> Decimal:
        return self.cleaned_data.get("price_output_per_1m") or Decimal(0)


class DeploymentForm(StyledModelForm):
    provider = forms.ChoiceField(label=_("プロバイダ"))
    reason = _reason_field()
    blank_means_default = ("gpu_count",)

    class Meta:
        model = Deployment
        formfield_callback = _formfield
        fields = [
            "model",
            "name",
            "provider",
            "base_url",
            "served_model_name",
            "secret_ref",
            "zone",
            "clearance",
            "max_concurrency",
            "enabled",
            "gpu_hour_yen",
            "gpu_count",
            "throughput_tokens_per_s",
        ]
        help_texts = {
            "base_url": _(
                "OpenAI互換APIのベースURL（/v1 の手前まで。例: http://vllm-llmjp.gpu.svc:8000）。"
                "接続先は許可リスト（GENNAI_UPSTREAM_ALLOWED_HOSTS）にあるホストに限られます。"
            ),
            "served_model_name": _("上流サーバーが受け付けるモデル名（vLLM の --served-model-name）。"),
            "secret_ref": _(
                "APIキーの保管場所。「env:GENNAI_UPSTREAM_名前」（環境変数）か「file:ファイル名」"
                "（GENNAI_UPSTREAM_SECRETS_DIR 内）で指定します。キーそのものは入力しないでください。"
            ),
            "zone": _("オンプレミス以外のデプロイメントへの経路変更は、別の担当者の承認後に反映されます。"),
            "clearance": _(
                "配置先ゾーンが扱える最高の機密性。実効値はモデルの機密性との小さい方です。"
                "外部クラウドのAPIは機密性1のみ。"
            ),
            "gpu_hour_yen": _(
                "オンプレミスの利用料計算用。1回の利用料 = トークン数 ÷ スループット ÷ 3600"
                " × GPU時間単価 × 占有GPU数。"
                "空欄ならモデルのトークン単価で計算します。"
            ),
            "gpu_count": _("このデプロイメントが占有するGPU数（共有GPUは割合、例: 0.5）。"),
            "throughput_tokens_per_s": _(
                "想定同時実行数での実測値（入力＋出力トークン/秒、inference bench で測定）。"
            ),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        installed = sorted(load_providers())
        choices = [(name, name) for name in installed]
        current = self.instance.provider if self.instance.pk else None
        if current and current not in installed:
            # Keep a deployment editable when its plugin was uninstalled, and say so.
            choices.append((current, f"{current} ({_('未インストール')})"))
        provider_field = self.fields["provider"]
        assert isinstance(provider_field, forms.ChoiceField)
        provider_field.choices = choices
        self.fields["secret_ref"].widget.attrs.update({"autocomplete": "off", "spellcheck": "false"})
        self.fields["gpu_count"].required = False  # blank = one GPU (the model default)

    def full_clean(self) -> None:
        super().full_clean()
        if "secret_ref" in self.errors:
            # It may be a pasted API key: never echo a refused value back into the page.
            data = dict(self.data.items())
            data["secret_ref"] = ""
            self.data = data

    def clean_gpu_count(self) -> Decimal:
        value = self.cleaned_data.get("gpu_count")
        return Decimal(1) if value is None else Decimal(value)

    def clean_secret_ref(self) -> str:
        value = str(self.cleaned_data.get("secret_ref") or "").strip()
        try:
            validate_secret_ref(value)
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["secret_ref"]) from exc
        return value


class AliasForm(StyledModelForm):
    class Meta:
        model = Alias
        fields = ["name", "display_name_ja", "display_name_en", "kind", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}
        help_texts = {
            "name": _("利用者やAPIが指定する名前（例: standard-chat）。後から変更できません。"),
        }


# --- Alias actions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightRow:
    """One deployment row of the routes form."""

    deployment: Deployment
    field: forms.BoundField
    current: RouteRow | None


class AliasRoutesForm(forms.Form):
    """New weights for an alias: one optional weight per candidate deployment, and a reason.

    Weights are relative (90 and 10 = a 10 % canary; 0 and 100 = promote to full).
    A blank weight leaves the deployment out of the revision; 0 keeps it listed
    without traffic.
    """

    reason = forms.CharField(
        label=_("変更理由"),
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=_("履歴と監査ログに残ります（例: 評価結果良好のため新モデルへ10%のカナリア配信）。"),
    )

    def __init__(
        self,
        *args: Any,
        deployments: list[Deployment],
        current: list[RouteRow],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.deployments = deployments
        self.current = {row.deployment.pk: row for row in current}
        for deployment in deployments:
            row = self.current.get(deployment.pk)
            self.fields[f"weight_{deployment.pk}"] = forms.IntegerField(
                label=deployment.name,
                required=False,
                min_value=0,
                max_value=1000,
                initial=row.weight if row else None,
                widget=forms.NumberInput(attrs={"inputmode": "numeric", "class": "gn-input w-28"}),
            )
        style(self)
        for deployment in deployments:
            self.fields[f"weight_{deployment.pk}"].widget.attrs["data-testid"] = f"weight-{deployment.name}"
        self.fields["reason"].widget.attrs["data-testid"] = "routes-reason"

    def full_clean(self) -> None:
        super().full_clean()
        mark_errors(self)

    def rows(self) -> Iterator[WeightRow]:
        for deployment in self.deployments:
            yield WeightRow(
                deployment=deployment,
                field=self[f"weight_{deployment.pk}"],
                current=self.current.get(deployment.pk),
            )

    def routes(self) -> list[tuple[Deployment, int]]:
        return [
            (d, int(self.cleaned_data[f"weight_{d.pk}"]))
            for d in self.deployments
            if self.cleaned_data.get(f"weight_{d.pk}") is not None
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not self.errors and not self.routes():
            raise ValidationError(_("少なくとも1つのデプロイメントに重みを入力してください。"))
        return cleaned


class AliasRollbackForm(forms.Form):
    reason = forms.CharField(
        label=_("理由（任意）"),
        max_length=500,
        required=False,
        widget=forms.TextInput(attrs={"class": "gn-input w-full", "data-testid": "rollback-reason"}),
    )


class AliasGrantForm(forms.Form):
    ministry = forms.ModelChoiceField(queryset=Ministry.objects.filter(active=True), to_field_name="code")
    action = forms.ChoiceField(choices=[("grant", "grant"), ("revoke", "revoke")])
