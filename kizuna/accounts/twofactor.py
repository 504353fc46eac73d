"""Two-factor login with an authenticator app (TOTP, RFC 6238) and one-time recovery codes.

Optional per user, required for a user an admin marks, or for every admin with
KIZUNA_2FA_REQUIRED_FOR_ADMINS. The secret is encrypted at rest with a key derived from the
secret key (rotating KIZUNA_SECRET_KEY therefore means enrolling again). Codes typed with a
Japanese IME (full-width digits, spaces) are normalised before they are checked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import unicodedata
from urllib.parse import urlsplit

import pyotp
import segno
from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .models import RecoveryCode, TwoFactorDevice, hash_secret
from .roles import Role

STEP_SECONDS = 30
DIGITS = 6
RECOVERY_CODES = 10
ISSUER = "Kizuna"


def _fernet() -> Fernet:
    key = hashlib.sha256(b"kizuna.accounts.twofactor:" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def _secret(device: TwoFactorDevice) -> str:
    try:
        return _fernet().decrypt(device.secret.encode()).decode()
    except InvalidToken:  # the secret key changed since enrolment: no code can match
        return ""


def required_for(user) -> bool:
    if getattr(user, "two_factor_required", False):
        return True
    return bool(getattr(settings, "KIZUNA_2FA_REQUIRED_FOR_ADMINS", False)) and user.role == Role.ADMIN


def device_of(user) -> TwoFactorDevice | None:
    return TwoFactorDevice.objects.filter(user=user).first()


def enabled_for(user) -> bool:
    return TwoFactorDevice.objects.filter(user=user, confirmed_at__isnull=False).exists()


def start_enrolment(user) -> TwoFactorDevice:
    """A fresh, unconfirmed secret (replacing an earlier unconfirmed one); a confirmed device
    is never replaced here: turning it off comes first."""
    device = device_of(user)
    if device is not None and device.confirmed:
        return device
    secret = pyotp.random_base32(32)  # 160 bits, as RFC 4226 recommends
    encrypted = _fernet().encrypt(secret.encode()).decode()
    device, _created = TwoFactorDevice.objects.update_or_create(
        user=user, defaults={"secret": encrypted, "confirmed_at": None, "last_step": 0})
    return device


def secret_for_display(device: TwoFactorDevice) -> str:
    """The base32 secret in groups of four, for typing into an app by hand."""
    secret = _secret(device)
    return " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))


def provisioning_uri(device: TwoFactorDevice) -> str:
    host = urlsplit(settings.BASE_URL).hostname or "kizuna"
    return pyotp.TOTP(_secret(device)).provisioning_uri(
        name=f"{device.user.get_username()}@{host}", issuer_name=ISSUER)


def qr_data_uri(uri: str) -> str:
    """The otpauth URI as an SVG QR code, drawn here (segno is pure Python) and returned as a
    data: URI for an <img>, so no markup of ours is marked safe and the CSP stays strict."""
    return segno.make(uri, error="m").svg_data_uri(scale=5, dark="#1f2933")


def normalise_code(code: str) -> str:
    """'１２３ ４５６' (full-width, with a space) → '123456'."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", code or "") if ch.isalnum()).lower()


def _now_step() -> int:
    return int(timezone.now().timestamp()) // STEP_SECONDS


def verify_code(device: TwoFactorDevice, code: str) -> bool:
    """True for the code of the current 30-second step or one either side (clock drift), once:
    a code seen before, or an older one, is refused, so an overheard code cannot be replayed."""
    code = normalise_code(code)
    secret = _secret(device)
    if len(code) != DIGITS or not code.isdigit() or not secret:
        return False
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    now = _now_step()
    for step in (now - 1, now, now + 1):
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
            # Conditional update: two requests racing with one code cannot both win.
            return TwoFactorDevice.objects.filter(pk=device.pk, last_step__lt=step).update(last_step=step) == 1
    return False


def confirm(device: TwoFactorDevice, code: str) -> list[str] | None:
    """Turns the device on when the first code matches; returns the recovery codes (shown once)."""
    if not verify_code(device, code):
        return None
    device.confirmed_at = timezone.now()
    device.save(update_fields=["confirmed_at"])
    return issue_recovery_codes(device)


def _format(raw: str) -> str:
    return "-".join(raw[i:i + 4] for i in range(0, len(raw), 4))


@transaction.atomic
def issue_recovery_codes(device: TwoFactorDevice) -> list[str]:
    """New codes replace all earlier ones."""
    device.recovery_codes.all().delete()
    codes = [base64.b32encode(secrets.token_bytes(10)).decode().lower() for _ in range(RECOVERY_CODES)]
    RecoveryCode.objects.bulk_create(RecoveryCode(device=device, code_hash=hash_secret(c)) for c in codes)
    return [_format(c) for c in codes]


def use_recovery_code(device: TwoFactorDevice, code: str) -> bool:
    code = normalise_code(code)
    if len(code) != 16:
        return False
    return RecoveryCode.objects.filter(device=device, code_hash=hash_secret(code), used_at__isnull=True).update(
        used_at=timezone.now()) == 1


def recovery_codes_left(device: TwoFactorDevice) -> int:
    return device.recovery_codes.filter(used_at__isnull=True).count()


def check_second_factor(device: TwoFactorDevice, code: str) -> str | None:
    """'totp' or 'recovery' for a good code, None otherwise."""
    if verify_code(device, code):
        return "totp"
    if use_recovery_code(device, code):
        return "recovery"
    return None


def disable(user) -> None:
    TwoFactorDevice.objects.filter(user=user).delete()
