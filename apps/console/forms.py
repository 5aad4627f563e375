"""Forms of the ministry console. They validate input; every write goes through services.

Security: every choice of a user, team or API key is built from the *acting*
ministry only (:mod:`.selectors`), and a choice field accepts only values of its
queryset, so a posted id of another ministry is refused as "not one of the
available choices" before any service runs (and the service checks again).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _

from apps.accounts.models import User
from gennai.forms import mark_errors, style

# Retention longer than ten years is not a retention policy; keep the number sane.
RETENTION_MAX_DAYS = 3650


class StyledForm(forms.Form):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        style(self)

    def full_clean(self) -> None:
        super().full_clean()
        mark_errors(self)


class UserChoiceField(forms.ModelChoiceField):  # type: ignore[type-arg]
    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.display_name or obj.username} ({obj.username})"


class TeamCreateForm(StyledForm):
    code = forms.SlugField(
        label=_("コード"),
        max_length=64,
        allow_unicode=True,
        help_text=_("英数字・ハイフン・アンダースコア。府省庁の中で一意です。後から変更できません。"),
        error_messages={"invalid": _("コードには英数字・ハイフン・アンダースコアだけを使えます。")},
    )
    name = forms.CharField(label=_("チーム名"), max_length=200)


class TeamRenameForm(StyledForm):
    name = forms.CharField(label=_("チーム名"), max_length=200)


class TeamMemberAddForm(StyledForm):
    """``users``: members of the acting ministry who are not yet in the team."""

    user = UserChoiceField(
        label=_("追加するメンバー"),
        queryset=User.objects.none(),
        error_messages={"invalid_choice": _("この府省庁のメンバーから選んでください。")},
    )

    def __init__(self, *args: Any, users: QuerySet[User], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["user"].queryset = users  # type: ignore[attr-defined]


class RetentionForm(StyledForm):
    days = forms.IntegerField(
        label=_("保存期間（日）"),
        required=False,
        min_value=1,
        max_value=RETENTION_MAX_DAYS,
        help_text=_(
            "アップロードからこの日数を過ぎた文書は毎日自動で削除されます。空欄にすると削除されるまで保存します。"
        ),
        error_messages={
            "min_value": _("1日以上を指定してください。"),
            "max_value": _("%(limit_value)s日以下を指定してください。"),
            "invalid": _("日数は整数で入力してください。"),
        },
    )


class LimitValueFields(forms.Form):
    """The six limit values and their ranges (those of the service's column checks).

    Shared by the ministry's limit forms (:class:`LimitValuesForm`) and the platform
    budget's (``forms_insight.PlatformLimitForm``), so the two cannot accept different ranges.
    """

    monthly_tokens = forms.IntegerField(
        label=_("月間トークン上限"), required=False, min_value=0, max_value=2**63 - 1
    )
    monthly_yen = forms.DecimalField(
        label=_("月間予算（円）"), required=False, min_value=0, max_digits=14, decimal_places=2
    )
    rpm = forms.IntegerField(
        label=_("毎分リクエスト数上限"), required=False, min_value=0, max_value=2**31 - 1
    )
    tpm = forms.IntegerField(label=_("毎分トークン数上限"), required=False, min_value=0, max_value=2**31 - 1)
    max_concurrent = forms.IntegerField(
        label=_("同時実行数上限"), required=False, min_value=0, max_value=2**31 - 1
    )
    max_tokens = forms.IntegerField(
        label=_("1回の応答の最大トークン数（max_tokens の上限）"),
        required=False,
        min_value=1,
        max_value=2**31 - 1,
    )

    VALUE_FIELDS = ("monthly_tokens", "monthly_yen", "rpm", "tpm", "max_concurrent", "max_tokens")


class LimitValuesForm(StyledForm, LimitValueFields):
    """The limit values of one subject; an empty field means "no limit of this kind at this level"."""

    def __init__(self, *args: Any, exemption_allowed: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A row of one team / user / key with every value empty exempts that subject from its
        # level's default row; for the ministry or a default row an empty row means nothing.
        self.exemption_allowed = exemption_allowed

    def all_empty(self) -> bool:
        return all(self.cleaned_data.get(name) is None for name in self.VALUE_FIELDS)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not self.exemption_allowed and not self.errors and self.all_empty():
            self.add_error(None, _("少なくとも1つの上限を入力してください。"))
        return cleaned

    def values(self) -> dict[str, Any]:
        return {name: self.cleaned_data.get(name) for name in self.VALUE_FIELDS}


class LimitCreateForm(LimitValuesForm):
    """Subject (level + team / user / API key of the acting ministry) and alias, then the values.

    At the team / user / key level, leaving the subject empty makes the row that
    level's default (applied to each team / user / key separately); a row of one
    subject with every value empty exempts that subject from the default.

    Security: the team, user and key choices are querysets of the acting
    ministry; an id of another ministry is "not one of the available choices".
    ``apps.quotas.limits.limit_set`` checks the subject against the active
    ministry once more.
    """

    level = forms.ChoiceField(
        label=_("対象のレベル"),
        choices=(),
        help_text=_(
            "チーム・利用者・APIキーのレベルで対象を選ばないと、その行は既定値として各対象に個別に"
            "適用されます。対象を選んで上限をすべて空欄にすると、その対象は既定値の適用外になります。"
        ),
    )
    team: forms.ModelChoiceField[Any] = forms.ModelChoiceField(
        label=_("チーム"),
        queryset=None,
        required=False,
        empty_label=_("（既定値: 各チームに個別に適用）"),
        error_messages={"invalid_choice": _("この府省庁のチームから選んでください。")},
    )
    user = UserChoiceField(
        label=_("利用者"),
        queryset=User.objects.none(),
        required=False,
        empty_label=_("（既定値: 各利用者に個別に適用）"),
        error_messages={"invalid_choice": _("この府省庁のメンバーから選んでください。")},
    )
    api_key: forms.ModelChoiceField[Any] = forms.ModelChoiceField(
        label=_("APIキー"),
        queryset=None,
        required=False,
        empty_label=_("（既定値: 各APIキーに個別に適用）"),
        error_messages={"invalid_choice": _("この府省庁のAPIキーから選んでください。")},
    )
    alias_name = forms.ChoiceField(
        label=_("モデル"),
        required=False,
        help_text=_("「すべてのモデル」はモデルをまとめた上限です。モデルごとの上限も別に設定できます。"),
        error_messages={"invalid_choice": _("この府省庁で利用できるモデルから選んでください。")},
    )

    field_order = ["level", "team", "user", "api_key", "alias_name", *LimitValuesForm.VALUE_FIELDS]

    def __init__(
        self,
        *args: Any,
        levels: list[tuple[str, Any]],
        teams: QuerySet[Any],
        users: QuerySet[User],
        api_keys: QuerySet[Any],
        alias_names: list[str],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["level"].choices = levels  # type: ignore[attr-defined]
        self.fields["team"].queryset = teams  # type: ignore[attr-defined]
        self.fields["user"].queryset = users  # type: ignore[attr-defined]
        self.fields["api_key"].queryset = api_keys  # type: ignore[attr-defined]
        self.fields["alias_name"].choices = [("", _("すべてのモデル")), *((n, n) for n in alias_names)]  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        level = self.cleaned_data.get("level")
        # Exactly the reference the level names; the others are dropped, not trusted. No
        # reference at the team / user / key level is that level's default row.
        wanted = {"team": "team", "user": "user", "api_key": "api_key"}.get(level or "")
        for name in ("team", "user", "api_key"):
            if name != wanted:
                self.cleaned_data[name] = None
        self.exemption_allowed = wanted is not None and self.cleaned_data.get(wanted) is not None
        return super().clean()


class LocalRoleGrantForm(StyledForm):
    """Grant a ministry role to a member for a period (the roles offered follow the ministry's policy)."""

    role = forms.ChoiceField(label=_("付与する役割"))
    expires_on = forms.DateField(
        label=_("有効期限（この日の終わりまで）"), widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, *args: Any, roles: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from apps.tenancy.models import Role

        labels = dict(Role.choices)
        field = self.fields["role"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [(role, labels[role]) for role in roles]

    def expires_at(self) -> Any:
        """End of the chosen day in Japan time (the start of the next day), as an aware datetime."""
        import datetime as dt

        from django.utils import timezone

        day = self.cleaned_data["expires_on"] + dt.timedelta(days=1)
        return timezone.make_aware(dt.datetime.combine(day, dt.time.min))
