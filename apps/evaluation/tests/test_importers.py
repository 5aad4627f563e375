from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import translation

from apps.evaluation.importers import ImportFailed, parse_csv, parse_jsonl, parse_suite_file
from apps.evaluation.models import Task
from apps.evaluation.services import suite_create, suite_import


def test_jsonl_defaults_and_metrics() -> None:
    rows = parse_jsonl(
        '{"input": "日本の首都は？", "reference": "東京"}\n\n'
        '{"input": "要約して", "rubric": "簡潔さ"}\n'
        '{"input": "1+1", "reference": "2", "metric": "exact"}\n'.encode()
    )
    assert [r.metric for r in rows] == ["char_f1", "judge", "exact"]


def test_jsonl_reports_every_bad_line_with_its_number() -> None:
    data = (
        b'{"input": "ok", "reference": "a"}\n'
        b"not json\n"
        b'{"reference": "no input"}\n'
        b'{"input": "x", "metric": "bleu", "reference": "y"}\n'
        b'{"input": "x", "metric": "exact"}\n'
        b'["list"]\n'
        b'{"input": "x", "extra": 1}\n'
    )
    with pytest.raises(ImportFailed) as excinfo:
        parse_jsonl(data)
    errors = excinfo.value.errors
    assert [e.split("行目")[0] for e in errors] == ["2", "3", "4", "5", "6", "7"]
    assert "JSON" in errors[0] and "input" in errors[1] and "bleu" in errors[2] and "reference" in errors[3]


def test_errors_are_in_english_under_en() -> None:
    with translation.override("en"), pytest.raises(ImportFailed) as excinfo:
        parse_jsonl(b'{"reference": "x"}\n')
    assert excinfo.value.errors[0].startswith("Line 1:")


def test_csv_with_header_and_row_numbers() -> None:
    data = "input,reference,metric\n日本の首都は？,東京,contains\n,空,exact\n".encode()
    with pytest.raises(ImportFailed) as excinfo:
        parse_csv(data)
    assert excinfo.value.errors[0].startswith("3行目")
    rows = parse_csv('\ufeffinput,reference\n"改行を\n含む",答え\n'.encode())
    assert rows[0].input == "改行を\n含む" and rows[0].metric == "char_f1"
    with pytest.raises(ImportFailed):
        parse_csv(b"question,answer\nq,a\n")


def test_unknown_extension_and_empty_file() -> None:
    with pytest.raises(ImportFailed):
        parse_suite_file(name="suite.xlsx", data=b"")
    with pytest.raises(ImportFailed):
        parse_suite_file(name="suite.jsonl", data=b"\n\n")
    with pytest.raises(ImportFailed):
        parse_suite_file(name="suite.csv", data="input\n".encode("utf-16"))


def test_import_is_all_or_nothing(officer: Any) -> None:
    suite = suite_create(actor=officer.user, name="基本")
    with pytest.raises(ImportFailed):
        suite_import(
            actor=officer.user,
            suite=suite,
            filename="s.jsonl",
            data=b'{"input": "a", "reference": "b"}\n{"bad": 1}\n',
        )
    assert Task.objects.filter(suite=suite).count() == 0
    assert (
        suite_import(
            actor=officer.user, suite=suite, filename="s.jsonl", data=b'{"input": "a", "reference": "b"}\n'
        )
        == 1
    )
    assert (
        suite_import(actor=officer.user, suite=suite, filename="s.csv", data=b"input,reference\nc,d\n") == 1
    )
    assert list(Task.objects.filter(suite=suite).values_list("position", "input")) == [(1, "a"), (2, "c")]


def test_staff_cannot_create_or_import(staff_a: Any, officer: Any) -> None:
    with pytest.raises(PermissionDenied):
        suite_create(actor=staff_a.user, name="x")
    suite = suite_create(actor=officer.user, name="y")
    with pytest.raises(PermissionDenied):
        suite_import(actor=staff_a.user, suite=suite, filename="s.jsonl", data=b'{"input": "a"}\n')
