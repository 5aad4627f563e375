"""Parsing suite files (JSONL and CSV) into validated task rows, with per-line errors.

Nothing is written here: :func:`apps.evaluation.services.suite_import` writes
all rows in one transaction, and only if there is no error at all, so a file
is never half-imported.

Each line/row has ``input`` (required), ``reference``, ``rubric`` and
``metric`` (``exact`` | ``contains`` | ``char_f1`` | ``judge``; default
``char_f1`` when there is a reference, else ``judge``).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

from django.utils.translation import gettext as _

from .models import MetricKind

MAX_TASKS = 5000
MAX_FIELD_CHARS = 20_000
FIELDS = ("input", "reference", "rubric", "metric")


@dataclass(frozen=True)
class TaskRow:
    input: str
    reference: str
    rubric: str
    metric: str


class ImportFailed(Exception):
    """The file has errors; ``errors`` lists them (one per line at most, in order)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _line_error(line: int, message: str) -> str:
    return _("%(line)d行目: %(message)s") % {"line": line, "message": message}


def _validate(line: int, record: object) -> TaskRow | str:
    if not isinstance(record, dict):
        return _line_error(line, _("オブジェクト（{...}）ではありません。"))
    unknown = sorted(set(record) - set(FIELDS))
    if unknown:
        return _line_error(line, _("不明な項目があります: %(names)s") % {"names": ", ".join(unknown)})
    values: dict[str, str] = {}
    for name in FIELDS:
        value = record.get(name, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            return _line_error(line, _("「%(name)s」は文字列で指定してください。") % {"name": name})
        if len(value) > MAX_FIELD_CHARS:
            return _line_error(
                line,
                _("「%(name)s」が長すぎます（%(max)d文字まで）。") % {"name": name, "max": MAX_FIELD_CHARS},
            )
        values[name] = value.strip() if name == "metric" else value
    if not values["input"].strip():
        return _line_error(line, _("「input」（入力）は必須です。"))
    metric = values["metric"] or (MetricKind.CHAR_F1 if values["reference"].strip() else MetricKind.JUDGE)
    if metric not in MetricKind.values:
        return _line_error(
            line,
            _("「metric」は %(choices)s のいずれかです（指定値: %(value)s）。")
            % {"choices": ", ".join(MetricKind.values), "value": metric},
        )
    if metric != MetricKind.JUDGE and not values["reference"].strip():
        return _line_error(
            line, _("指標「%(metric)s」には「reference」（参照解答）が必要です。") % {"metric": metric}
        )
    return TaskRow(
        input=values["input"], reference=values["reference"], rubric=values["rubric"], metric=str(metric)
    )


def _finish(rows: list[TaskRow], errors: list[str]) -> list[TaskRow]:
    if not rows and not errors:
        errors.append(_("タスクが1件もありません。"))
    if len(rows) > MAX_TASKS:
        errors.append(_("タスクは%(max)d件までです。") % {"max": MAX_TASKS})
    if errors:
        raise ImportFailed(errors)
    return rows


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportFailed([_("ファイルはUTF-8で保存してください。")]) from None


def parse_jsonl(data: bytes) -> list[TaskRow]:
    rows: list[TaskRow] = []
    errors: list[str] = []
    for number, line in enumerate(_decode(data).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(
                _line_error(number, _("JSONとして読めません（%(detail)s）。") % {"detail": exc.msg})
            )
            continue
        result = _validate(number, record)
        (errors.append if isinstance(result, str) else rows.append)(result)  # type: ignore[arg-type]
    return _finish(rows, errors)


def parse_csv(data: bytes) -> list[TaskRow]:
    """CSV with a header row naming the columns (``input`` required)."""
    reader = csv.DictReader(io.StringIO(_decode(data), newline=""))
    header = reader.fieldnames or []
    if "input" not in header:
        raise ImportFailed([_("1行目（見出し）に「input」列がありません。")])
    rows: list[TaskRow] = []
    errors: list[str] = []
    try:
        for record in reader:
            number = reader.line_num
            if None in record:
                errors.append(_line_error(number, _("列の数が見出しより多くなっています。")))
                continue
            if not any((v or "").strip() for v in record.values()):
                continue
            result = _validate(number, {k: v for k, v in record.items() if k})
            (errors.append if isinstance(result, str) else rows.append)(result)  # type: ignore[arg-type]
    except csv.Error as exc:
        errors.append(
            _line_error(reader.line_num, _("CSVとして読めません（%(detail)s）。") % {"detail": exc})
        )
    return _finish(rows, errors)


def parse_suite_file(*, name: str, data: bytes) -> list[TaskRow]:
    """By extension: ``.jsonl`` / ``.json`` lines, or ``.csv``."""
    lowered = name.lower()
    if lowered.endswith((".jsonl", ".ndjson")):
        return parse_jsonl(data)
    if lowered.endswith(".csv"):
        return parse_csv(data)
    raise ImportFailed([_("対応しているファイル形式はJSONL（.jsonl）とCSV（.csv）です。")])
