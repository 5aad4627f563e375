"""Forms of the API key console page."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from apps.registry.models import Clearance


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(label=_("名称（利用システム名など）"), max_length=100)
    aliases = forms.MultipleChoiceField(
        label=_("利用できるモデル（未選択の場合は府省庁で許可されたすべて）"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    max_level = forms.TypedChoiceField(
        label=_("取り扱う情報の機密性（上限）"), choices=Clearance.choices, coerce=int, initial=1
    )
    expires_at = forms.DateTimeField(
        label=_("有効期限（任意）"),
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )

    def __init__(self, *args: Any, alias_names: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["aliases"].choices = [(name, name) for name in alias_names]  # type: ignore[attr-defined]
