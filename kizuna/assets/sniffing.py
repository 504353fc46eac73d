"""What a file really is: decided from its bytes, never from its name or the browser's word.

An upload named `whitepaper.pdf` can be an HTML page with a script; served from Kizuna's origin
it would run as Kizuna. So the type comes from magic bytes (and, for Office files, from the ZIP
directory), only an allow-list is accepted, and a file whose first bytes also look like HTML (a
polyglot) is refused. The display name is cleaned here too: it is shown and sent back in
`Content-Disposition`, but never used as a path.

Plain functions over bytes and paths; the messages say what was found, for the uploader.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

HEAD_BYTES = 8192
POLYGLOT_WINDOW = 1024  # what browsers' HTML sniffing and old content sniffers look at
MAX_NAME = 150


@dataclass(frozen=True)
class FileKind:
    key: str
    label: str
    mime: str
    extensions: tuple[str, ...]  # the first one is added to a name without a known extension

    @property
    def extension(self) -> str:
        return self.extensions[0]


_OOXML = "application/vnd.openxmlformats-officedocument"
KINDS: dict[str, FileKind] = {k.key: k for k in (
    FileKind("pdf", gettext_lazy("PDF document"), "application/pdf", (".pdf",)),
    FileKind("png", gettext_lazy("PNG image"), "image/png", (".png",)),
    FileKind("jpeg", gettext_lazy("JPEG image"), "image/jpeg", (".jpg", ".jpeg", ".jpe")),
    FileKind("gif", gettext_lazy("GIF image"), "image/gif", (".gif",)),
    FileKind("webp", gettext_lazy("WebP image"), "image/webp", (".webp",)),
    FileKind("pptx", gettext_lazy("PowerPoint presentation (.pptx)"), f"{_OOXML}.presentationml.presentation",
             (".pptx",)),
    FileKind("docx", gettext_lazy("Word document (.docx)"), f"{_OOXML}.wordprocessingml.document", (".docx",)),
    FileKind("xlsx", gettext_lazy("Excel workbook (.xlsx)"), f"{_OOXML}.spreadsheetml.sheet", (".xlsx",)),
    FileKind("zip", gettext_lazy("ZIP archive"), "application/zip", (".zip",)),
    FileKind("csv", gettext_lazy("CSV file"), "text/csv", (".csv",)),
    FileKind("txt", gettext_lazy("text file"), "text/plain", (".txt", ".text", ".md", ".log")),
    FileKind("mp4", gettext_lazy("MP4 video"), "video/mp4", (".mp4", ".m4v")),
)}
KIND_OF_EXTENSION = {ext: kind.key for kind in KINDS.values() for ext in kind.extensions}
OCTET_STREAM = "application/octet-stream"


def allowed_labels() -> str:
    return ", ".join(str(k.label) for k in KINDS.values())


def content_type(kind_key: str, charset: str = "") -> str:
    """The Content-Type a download is served with: from the sniffed kind only, so never HTML."""
    kind = KINDS.get(kind_key)
    if kind is None:
        return OCTET_STREAM
    if kind.mime.startswith("text/"):
        return f"{kind.mime}; charset={charset or 'utf-8'}"
    return kind.mime


class Refused(ValueError):
    """The upload cannot be kept; the message says what the file is and why."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Detected:
    kind: FileKind
    charset: str = ""  # text files: utf-8 or shift_jis


# --- names ------------------------------------------------------------------------------------------

_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\.|$)", re.I)
_UNSAFE_CHARS = re.compile(r'[<>:"/\\|?*]')


def clean_file_name(raw: str) -> str:
    """A name safe to show and to offer in Content-Disposition: the last path part only, NFC
    (Japanese names from macOS arrive decomposed), no control or bidi characters (`‮fdp.exe`),
    no characters Windows refuses, no leading dots, at most MAX_NAME characters. Japanese stays."""
    text = unicodedata.normalize("NFC", str(raw or ""))
    text = re.split(r"[/\\]", text)[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")  # Cc, Cf (bidi), Cs, Co, Cn
    text = _UNSAFE_CHARS.sub("_", text)
    text = re.sub(r"\s+", " ", text).strip().lstrip(".").strip().rstrip(". ")
    if _WINDOWS_RESERVED.match(text):
        text = f"_{text}"
    if len(text) > MAX_NAME:
        stem, dot, ext = text.rpartition(".")
        ext = ext if dot and len(ext) <= 10 else ""
        text = (stem if ext else text)[: MAX_NAME - len(ext) - 1].rstrip(". ") + (f".{ext}" if ext else "")
    return text or "file"


def extension_of(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return f".{ext.lower()}" if dot and stem and ext else ""


def ascii_fallback(name: str) -> str:
    """The plain-ASCII filename for clients that ignore RFC 5987's filename*."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    folded = re.sub(r"[^A-Za-z0-9._()\- ]+", "_", folded).strip()
    stem = folded.rpartition(".")[0] if "." in folded else folded
    if not stem.strip("._ "):
        folded = "download" + extension_of(name)
    return folded


# --- content ----------------------------------------------------------------------------------------

# Recognised but not accepted: named in the refusal so the uploader knows what they have.
_REFUSED_SIGNATURES: list[tuple[bytes, int, str]] = [
    (b"MZ", 0, gettext_lazy("a Windows program (.exe/.dll)")),
    (b"\x7fELF", 0, gettext_lazy("a Linux program")),
    (b"\xcf\xfa\xed\xfe", 0, gettext_lazy("a macOS program")),
    (b"\xce\xfa\xed\xfe", 0, gettext_lazy("a macOS program")),
    (b"\xca\xfe\xba\xbe", 0, gettext_lazy("a macOS or Java program")),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 0,
     gettext_lazy("an Office 97–2003 file (.doc/.xls/.ppt) or a password-protected Office file: save it as "
                  ".docx, .xlsx or .pptx without a password")),
    (b"Rar!\x1a\x07", 0, gettext_lazy("a RAR archive")),
    (b"7z\xbc\xaf\x27\x1c", 0, gettext_lazy("a 7-Zip archive")),
    (b"\x1f\x8b", 0, gettext_lazy("a gzip archive")),
    (b"BZh", 0, gettext_lazy("a bzip2 archive")),
    (b"\xfd7zXZ\x00", 0, gettext_lazy("an xz archive")),
    (b"ustar", 257, gettext_lazy("a tar archive")),
    (b"II*\x00", 0, gettext_lazy("a TIFF image")),
    (b"MM\x00*", 0, gettext_lazy("a TIFF image")),
    (b"8BPS", 0, gettext_lazy("a Photoshop file")),
    (b"%!PS", 0, gettext_lazy("a PostScript file")),
    (b"{\\rtf", 0, gettext_lazy("an RTF document")),
    (b"ID3", 0, gettext_lazy("an MP3 audio file")),
    (b"OggS", 0, gettext_lazy("an Ogg audio or video file")),
    (b"fLaC", 0, gettext_lazy("a FLAC audio file")),
    (b"\x1aE\xdf\xa3", 0, gettext_lazy("a WebM or Matroska video")),
    (b"FWS", 0, gettext_lazy("a Flash file")),
    (b"CWS", 0, gettext_lazy("a Flash file")),
    (b"\x00asm", 0, gettext_lazy("a WebAssembly program")),
    (b"#!", 0, gettext_lazy("a script")),
]
_MP4_BRANDS = {b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"M4V ", b"M4VH",
               b"M4VP", b"dash", b"mmp4", b"f4v ", b"MSNV", b"XAVC"}
_ISO_REFUSED = {b"qt  ": gettext_lazy("a QuickTime movie (.mov)"), b"heic": gettext_lazy("a HEIC image"),
                b"heix": gettext_lazy("a HEIC image"), b"mif1": gettext_lazy("a HEIF image"),
                b"msf1": gettext_lazy("a HEIF image"), b"avif": gettext_lazy("an AVIF image"),
                b"avis": gettext_lazy("an AVIF image"), b"M4A ": gettext_lazy("an M4A audio file"),
                b"3gp4": gettext_lazy("a 3GP video"), b"3gp5": gettext_lazy("a 3GP video")}
# Markup in the first bytes: a browser (or an old sniffer) could take the file for a web page.
_MARKUP = re.compile(rb"<(?:!doctype\s+html|html|head|body|script|iframe|svg|object|embed|meta\s+http-equiv"
                     rb"|base\s+href|style)[\s>/]", re.I)
_TEXT_MARKUP_START = re.compile(rb"<(?:!doctype|!--|\?xml|[a-z][a-z0-9:-]*[\s>/])", re.I)
_TEXT_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")


def _zip_kind(path: Path) -> FileKind:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            mimetype = archive.read("mimetype")[:80] if "mimetype" in names else b""
    except (zipfile.BadZipFile, OSError, KeyError, RuntimeError, ValueError) as exc:
        raise Refused(_("The file starts like a ZIP archive but cannot be read as one (%(reason)s); it may be "
                        "damaged or cut short.") % {"reason": exc}) from exc
    if "[Content_Types].xml" in names:
        for part, key in (("word/document.xml", "docx"), ("xl/workbook.xml", "xlsx"),
                          ("ppt/presentation.xml", "pptx")):
            if part in names:
                return KINDS[key]
        raise Refused(_("This is an Office Open XML file of a kind that cannot be uploaded (not a Word, Excel or "
                        "PowerPoint document)."))
    if mimetype.startswith(b"application/vnd.oasis.opendocument"):
        raise Refused(_("This is an OpenDocument file (.odt/.ods/.odp), which cannot be uploaded: save it as "
                        ".docx, .xlsx or .pptx, or put it in a ZIP archive."))
    if "META-INF/MANIFEST.MF" in names or "AndroidManifest.xml" in names:
        raise Refused(_("This is a Java or Android program (.jar/.apk), which cannot be uploaded."))
    return KINDS["zip"]


def _text_kind(path: Path, head: bytes, name: str) -> Detected:
    """Text is accepted in UTF-8 or Shift_JIS (CP932, what Excel writes in Japan), without markup."""
    if b"\x00" in head or _TEXT_CONTROL.search(head):
        raise Refused(_("This is binary data of an unknown type, which cannot be uploaded. Allowed: %(allowed)s.")
                      % {"allowed": allowed_labels()})
    start = head.removeprefix(codecs.BOM_UTF8).lstrip()
    if _TEXT_MARKUP_START.match(start) or _MARKUP.search(head):
        low = head.lower()
        if b"<svg" in low:
            what = _("an SVG image")
        elif start.lower().startswith(b"<?xml") and b"<html" not in low:
            what = _("an XML document")
        else:
            what = _("an HTML page")
        raise Refused(_("This file is %(what)s, which cannot be uploaded: it could run scripts in the browser of "
                        "whoever opens it.") % {"what": what})
    charset = ""
    for encoding in ("utf-8-sig", "cp932"):
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 16):
                    decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            continue
        charset = "utf-8" if encoding == "utf-8-sig" else "shift_jis"
        break
    if not charset:
        raise Refused(_("This file is neither a known type nor text in UTF-8 or Shift_JIS, so it cannot be "
                        "uploaded. Allowed: %(allowed)s.") % {"allowed": allowed_labels()})
    kind = KINDS["csv"] if extension_of(name) == ".csv" else KINDS["txt"]
    return Detected(kind, charset)


def detect(path: Path, name: str = "") -> Detected:
    """The allowed kind of the file at `path`; raises Refused naming what it is otherwise."""
    with path.open("rb") as fh:
        head = fh.read(HEAD_BYTES)
    if not head:
        raise Refused(_("The file is empty."))
    kind: FileKind | None = None
    if head.startswith(b"%PDF-"):
        kind = KINDS["pdf"]
    elif head.startswith(b"\x89PNG\r\n\x1a\n"):
        kind = KINDS["png"]
    elif head.startswith(b"\xff\xd8\xff"):
        kind = KINDS["jpeg"]
    elif head[:6] in (b"GIF87a", b"GIF89a"):
        kind = KINDS["gif"]
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        kind = KINDS["webp"]
    elif head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        kind = _zip_kind(path)
    elif head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _MP4_BRANDS:
            kind = KINDS["mp4"]
        else:
            what = _ISO_REFUSED.get(brand) or _("an ISO media file (brand “%(brand)s”)") % {
                "brand": brand.decode("latin-1")}
            raise Refused(_("This file is %(what)s, which cannot be uploaded. Allowed: %(allowed)s.")
                          % {"what": what, "allowed": allowed_labels()})
    elif head[:4] == b"RIFF":
        raise Refused(_("This file is %(what)s, which cannot be uploaded. Allowed: %(allowed)s.")
                      % {"what": _("a RIFF audio or video file (WAV/AVI)"), "allowed": allowed_labels()})
    else:
        for signature, offset, what in _REFUSED_SIGNATURES:
            if head[offset:offset + len(signature)] == signature:
                raise Refused(_("This file is %(what)s, which cannot be uploaded. Allowed: %(allowed)s.")
                              % {"what": what, "allowed": allowed_labels()})
        return _text_kind(path, head, name)
    if _MARKUP.search(head[:POLYGLOT_WINDOW]):
        raise Refused(_("This %(kind)s also contains web-page markup (such as <script> or <html>) in its first "
                        "bytes, so a browser could run it as a page (a polyglot file). It cannot be uploaded.")
                      % {"kind": kind.label})
    return Detected(kind)


def settle(detected: Detected, raw_name: str) -> tuple[str, Detected]:
    """The cleaned display name and the kind it is served as. A name without a known extension
    gets the detected kind's; a known extension of another kind is refused (a `.jpg` that is
    really a PDF), except an Office file named `.zip`, which is kept (and served) as a ZIP."""
    name = clean_file_name(raw_name)
    ext = extension_of(name)
    named = KIND_OF_EXTENSION.get(ext)
    kind = detected.kind
    if named is None:
        return f"{name}{kind.extension}", detected
    if named == kind.key:
        return name, detected
    if named == "zip" and kind.key in ("docx", "xlsx", "pptx"):
        return name, Detected(KINDS["zip"])
    if named in ("csv", "txt") and kind.key in ("csv", "txt"):
        return name, Detected(KINDS[named], detected.charset)
    raise Refused(_("The file is named “%(name)s” (%(ext)s), but its content is a %(kind)s. Rename it to %(right)s "
                    "or upload the right file.") % {"name": name, "ext": ext, "kind": kind.label,
                                                     "right": kind.extension})
