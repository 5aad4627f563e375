"""Where the original files live: Django's storages API.

``STORAGES["documents"]`` when a settings module defines it (production: an
S3-compatible bucket through django-storages, see docs/documents.md), else a
:class:`~django.core.files.storage.FileSystemStorage` under
``settings.GENNAI_DOCUMENTS_ROOT``. Names never contain the uploaded file name:
``<ministry>/<workspace>/<sha256>.<random>``: one stored object per document, never
shared, so deleting a document's original can never remove another document's
(earlier names, ``<ministry>/<workspace>/<sha256>``, stay valid for their documents).
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage, storages


def documents_storage() -> Storage:
    if "documents" in getattr(settings, "STORAGES", {}):
        return storages["documents"]
    return FileSystemStorage(location=str(settings.GENNAI_DOCUMENTS_ROOT))


def storage_name(*, ministry_id: int, workspace_id: int, sha256: str) -> str:
    """A new object name for one upload of these bytes (never an existing document's).

    Security/integrity: the name must not be shared. A purge deletes its document's
    original after the row is gone; had a re-upload of the same bytes in those
    milliseconds reused the stored object by name (the row no longer deduplicated
    it), the purge would have deleted the new document's original. Some storages
    overwrite on save (S3 with ``AWS_S3_FILE_OVERWRITE``), so the name itself is unique.
    """
    return f"{ministry_id}/{workspace_id}/{sha256}.{secrets.token_hex(8)}"
