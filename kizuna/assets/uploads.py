"""The upload handler of the asset pages: the file goes straight to the data dir, counted.

Django's default handlers keep small files in memory and write large ones to the system's temp
directory (often a RAM disk). This one streams every chunk into `assets/incoming/`, hashing it on
the way, and stops storing at the size limit: the rest of the body is read and dropped
(`SkipFile`), so the other fields of the form survive and the page can say exactly why.
"""

from __future__ import annotations

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile

from kizuna.assets import storage


class IncomingFile(UploadedFile):
    """An upload already written to incoming/; `incoming` has its size and SHA-256."""

    def __init__(self, incoming: storage.Incoming, name: str, content_type: str | None):
        super().__init__(file=incoming.path.open("rb"), name=name, content_type=content_type, size=incoming.size)
        self.incoming = incoming


class TooLargeUpload:
    """What the view reports when the file passed the limit: the limit and the size sent."""

    def __init__(self, field_name: str, file_name: str, limit: int, size: int):
        self.field_name = field_name
        self.file_name = file_name
        self.limit = limit
        self.size = size


class AssetUploadHandler(FileUploadHandler):
    def __init__(self, request=None, limit: int | None = None):
        super().__init__(request)
        self.limit = storage.max_bytes() if limit is None else limit
        self.writer: storage.Writer | None = None
        self.request_length: int | None = None

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        self.request_length = content_length
        return None

    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        self.writer = storage.Writer(self.limit)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        try:
            self.writer.write(raw_data)
        except storage.TooLarge as exc:
            self.writer.discard()
            # The request's length is the best measure of what was sent (the form's other fields
            # add a few hundred bytes); the bytes past the limit are dropped, never counted.
            size = max(exc.size, self.request_length or 0)
            refused = getattr(self.request, "too_large_uploads", [])
            refused.append(TooLargeUpload(self.field_name, self.file_name, self.limit, size))
            self.request.too_large_uploads = refused
            raise SkipFile from exc
        return None  # consumed here: no later handler stores it

    def file_complete(self, file_size: int) -> IncomingFile:
        incoming = self.writer.finish()
        self.writer = None
        return IncomingFile(incoming, self.file_name, self.content_type)

    def upload_interrupted(self) -> None:
        if self.writer is not None:
            self.writer.discard()
            self.writer = None
