"""Form helpers shared by every app's forms: the design system's classes and accessible errors."""

from __future__ import annotations

from django import forms


def style(form: forms.BaseForm) -> None:
    """Give every widget the shared ``gn-*`` classes and a test id."""
    for name, field in form.fields.items():
        widget = field.widget
        if isinstance(widget, forms.CheckboxInput):
            css = "size-5"
        elif isinstance(widget, forms.Select):
            css = "gn-select w-full"
        else:
            css = "gn-input w-full"
        widget.attrs.setdefault("class", css)
        widget.attrs.setdefault("data-testid", f"field-{name}")


def mark_errors(form: forms.BaseForm) -> None:
    """After validation: tie each invalid control to its error text (screen readers)."""
    for name in form.errors:
        if name not in form.fields:
            continue
        auto_id = form[name].auto_id
        described = [f"{auto_id}_helptext"] if form.fields[name].help_text else []
        form.fields[name].widget.attrs["aria-invalid"] = "true"
        form.fields[name].widget.attrs["aria-describedby"] = " ".join([*described, f"{auto_id}_error"])
