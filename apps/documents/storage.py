"""Where the original files live: Django's storages API.

``STORAGES["documents"]`` when a settings module defines it (production: an
S3-compatible bucket through django-storages, see docs/documents.md), else a
:class:`~django.core.files.storage.FileSystemStorage` under
``settings.GENNAI_DOCUMENTS_ROOT``. Names never contain the uploaded file name:
``<ministry>/<workspace>/<sha256>``.
"""

from __future__ import annotations

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage, storages


def documents_storage() -> Storage:
    if "documents" in getattr(settings, "STORAGES", {}):
        return storages["documents"]
    return FileSystemStorage(location=str(settings.GENNAI_DOCUMENTS_ROOT))


def storage_name(*, ministry_id: int, workspace_id: int, sha256: str) -> str:
    return f"{ministry_id}/{workspace_id}/{sha256}"
