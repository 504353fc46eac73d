"""Email address normalisation and validation, shared by forms, the API and imports.

Japanese input often carries full-width characters (ｔａｒｏ＠ｅｘａｍｐｌｅ．ｊｐ) and stray
spaces; NFKC folds them. Addresses are compared lower-cased: mailbox providers treat the local
part case-insensitively in practice, and two rows differing only by case are one person.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_SPACE = re.compile(r"\s")  # the characters str.isspace() accepts
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class InvalidEmail(ValueError):
    pass


def normalise_email(value: str) -> str:
    """Returns the canonical form of an address or raises InvalidEmail with the reason."""
    v = unicodedata.normalize("NFKC", value).strip().strip("<>").strip()
    if not v:
        raise InvalidEmail("empty")
    if _SPACE.search(v):
        raise InvalidEmail("contains spaces")
    if v.count("@") != 1:
        raise InvalidEmail("must contain exactly one @")
    local, domain = v.rsplit("@", 1)
    if not local or len(local) > 64:
        raise InvalidEmail("the part before @ is empty or too long")
    if not _LOCAL.match(local) or local.startswith(".") or local.endswith(".") or ".." in local:
        raise InvalidEmail("the part before @ has characters an address cannot have")
    domain = domain.lower().rstrip(".")
    if not domain.isascii():  # ASCII domains are already in their IDNA form (imports check millions)
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise InvalidEmail("the domain is not valid") from exc
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise InvalidEmail("the domain is not valid")
    if labels[-1].isdigit():
        raise InvalidEmail("the domain is not valid")
    address = f"{local.lower()}@{domain}"
    if len(address) > 254:
        raise InvalidEmail("longer than 254 characters")
    return address


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[-1]


def email_hash(email: str) -> str:
    """The SHA-256 of a normalised address: what is kept of an address erased on request. Unkeyed on
    purpose, so it survives a change of secret key; it can confirm a guessed address, never reveal one."""
    return hashlib.sha256(b"kizuna-erased:" + email.strip().lower().encode()).hexdigest()
