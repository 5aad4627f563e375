"""Filter forms of the insight pages (usage dashboard, audit browser, platform views)."""

from __future__ import annotations

from datetime import date
from typing import Any

from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from apps.audit.selectors import AuditFilter

from .forms import LimitValueFields

#: Longest period of one view or export (a year and a day: any calendar year fits).
MAX_PERIOD_DAYS = 366


def this_month() -> tuple[date, date]:
    today = timezone.localdate()
    return today.replace(day=1), today


class PeriodForm(forms.Form):
    """A period of whole days (Japan time), both ends inclusive; defaults to this month."""

    start = forms.DateField(label=_("開始日"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label=_("終了日"), required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        first, last = this_month()
        start = cleaned.get("start") or first
        end = cleaned.get("end") or (last if start <= last else start)
        if end < start:
            raise forms.ValidationError(_("終了日は開始日以降の日付を指定してください。"))
        if (end - start).days + 1 > MAX_PERIOD_DAYS:  # both ends inclusive
            raise forms.ValidationError(
                _("期間は%(days)d日以内で指定してください。") % {"days": MAX_PERIOD_DAYS}
            )
        cleaned["start"], cleaned["end"] = start, end
        return cleaned

    def period(self) -> tuple[date, date]:
        """The valid period, or this month when the form is invalid (the errors are shown)."""
        if self.is_valid():
            return self.cleaned_data["start"], self.cleaned_data["end"]
        return this_month()


USAGE_GROUPS = [
    ("", _("日別（合計）")),
    ("model", _("モデル別")),
    ("feature", _("機能別")),
    ("team", _("チーム別")),
    ("user", _("ユーザー別")),
]


class UsageFilterForm(PeriodForm):
    group_by = forms.ChoiceField(label=_("集計単位"), choices=USAGE_GROUPS, required=False)

    def group(self) -> str | None:
        if self.is_valid():
            return self.cleaned_data.get("group_by") or None
        return None


class AuditFilterForm(PeriodForm):
    """Filters of the audit browser; ``ministry`` only for platform readers (see the view)."""

    action = forms.CharField(label=_("操作"), required=False, max_length=100)
    actor = forms.CharField(label=_("実行者"), required=False, max_length=150)
    ministry = forms.TypedChoiceField(label=_("府省庁"), required=False, coerce=int, empty_value=None)

    def __init__(
        self, *args: Any, ministry_choices: list[tuple[Any, str]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        if ministry_choices is None:
            del self.fields["ministry"]
        else:
            field: forms.TypedChoiceField = self.fields["ministry"]  # type: ignore[assignment]
            field.choices = [("", _("すべての府省庁")), *ministry_choices]

    def audit_filter(self) -> AuditFilter:
        start, end = self.period()
        data = self.cleaned_data if self.is_valid() else {}
        return AuditFilter(
            action=(data.get("action") or "").strip(),
            actor=(data.get("actor") or "").strip(),
            start=start,
            end=end,
        )


class PlatformLimitForm(LimitValueFields):
    """The platform budget: limits for all aliases together (alias empty) or one alias.

    The values and their ranges are the ministry form's (:class:`LimitValueFields`).
    """

    field_order = ["alias_name"]

    alias_name = forms.CharField(
        label=_("モデル名（エイリアス、空欄はすべて）"), required=False, max_length=100
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["max_tokens"].label = _("max_tokens の上限")


#: Modes of a ministry's local-grant policy (``platform_default`` removes the ministry's override).
LOCAL_GRANT_MODES = [
    ("enable", _("この府省庁では有効にする")),
    ("disable", _("この府省庁では無効にする")),
    ("platform_default", _("プラットフォームの既定に従う（個別設定を削除）")),
]


class LocalGrantPolicyForm(forms.Form):
    """One ministry's local-grant policy, as ``manage.py local_grant_policy`` takes it.

    ``allow_ministry_admin`` only with ``enable`` (otherwise a form error: the
    platform admin must not believe they allowed something that is off).
    """

    mode = forms.ChoiceField(label=_("ローカル付与"), choices=LOCAL_GRANT_MODES, widget=forms.RadioSelect)
    allow_ministry_admin = forms.BooleanField(
        label=_("府省庁管理者の役割も付与できるようにする"), required=False
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("allow_ministry_admin") and cleaned.get("mode") not in (None, "enable"):
            self.add_error(
                "allow_ministry_admin",
                _("府省庁管理者の付与は、この府省庁で有効にする場合にだけ指定できます。"),
            )
        return cleaned

    def policy_kwargs(self) -> dict[str, Any]:
        """The ``enabled`` and ``allow_ministry_admin`` arguments of ``local_grant_policy_set``."""
        mode = self.cleaned_data["mode"]
        return {
            "enabled": {"enable": True, "disable": False}.get(mode),
            "allow_ministry_admin": mode == "enable" and bool(self.cleaned_data["allow_ministry_admin"]),
        }
