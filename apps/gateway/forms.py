"""Forms of the API key console page."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from apps.registry.models import Clearance


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(label=_("名称（利用システム名など）"), max_length=100)
    aliases = forms.MultipleChoiceField(
        label=_("利用できるモデル（未選択の場合は府省庁で許可されたすべて）"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    # /v1/search only. Choices are the ministry's shared workspaces, so a crafted id
    # (another ministry's, a personal one) is a form error and never reaches the service.
    workspaces = forms.TypedMultipleChoiceField(
        label=_("検索できるワークスペース（/v1/search。未選択の場合は府省庁のすべての共有ワークスペース）"),
        required=False,
        coerce=int,
        widget=forms.CheckboxSelectMultiple,
    )
    max_level = forms.TypedChoiceField(
        label=_("取り扱う情報の機密性（上限）"), choices=Clearance.choices, coerce=int, initial=1
    )
    # Required: every key expires (at most GENNAI_API_KEY_MAX_LIFETIME_DAYS ahead;
    # the service enforces the cap, the form offers the maximum as the default).
    expires_at = forms.DateTimeField(
        label=_("有効期限"),
        required=True,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )

    def __init__(
        self,
        *args: Any,
        alias_names: list[str],
        max_lifetime: timedelta,
        workspace_choices: Sequence[tuple[int, str, int]] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["aliases"].choices = [(name, name) for name in alias_names]  # type: ignore[attr-defined]
        self.fields["workspaces"].choices = [  # type: ignore[attr-defined]
            (pk, f"{name}（{Clearance(level).label}）") for pk, name, level in workspace_choices
        ]
        latest = timezone.localtime() + max_lifetime
        self.fields["expires_at"].initial = latest.replace(second=0, microsecond=0) - timedelta(minutes=1)
        self.fields["expires_at"].help_text = _("最長%(days)d日後まで") % {"days": max_lifetime.days}


class ApiKeyWorkspacesForm(forms.Form):
    """Edit a key's /v1/search workspaces (choices: the ministry's shared workspaces only)."""

    workspaces = forms.TypedMultipleChoiceField(
        label=_("検索できるワークスペース（未選択の場合は府省庁のすべての共有ワークスペース）"),
        required=False,
        coerce=int,
        widget=forms.CheckboxSelectMultiple,
    )

    def __init__(
        self, *args: Any, workspace_choices: Sequence[tuple[int, str, int]] = (), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["workspaces"].choices = [  # type: ignore[attr-defined]
            (pk, f"{name}（{Clearance(level).label}）") for pk, name, level in workspace_choices
        ]
