from pathlib import Path

import pytest

from kizuna import config


def test_secret_key_is_generated_once_and_private(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("KIZUNA_SECRET_KEY", raising=False)
    first = config.secret_key(tmp_path)
    assert len(first) > 40
    assert config.secret_key(tmp_path) == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_configured_secret_key_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("KIZUNA_SECRET_KEY", "from-env")
    assert config.secret_key(tmp_path) == "from-env"


def test_email_urls(tmp_path):
    smtp = config.email_settings("smtp://u%40x:p@mail.example:2525?starttls=1", tmp_path)["MAILERS"]["default"]
    assert smtp["OPTIONS"] == {"host": "mail.example", "port": 2525, "username": "u@x", "password": "p",
                               "use_ssl": False, "use_tls": True, "timeout": 30}
    smtps = config.email_settings("smtps://mail.example", tmp_path)["MAILERS"]["default"]["OPTIONS"]
    assert smtps["port"] == 465 and smtps["use_ssl"]
    capture = config.email_settings("", tmp_path)["MAILERS"]["default"]
    assert capture["OPTIONS"]["file_path"] == str(tmp_path / "mail")
    with pytest.raises(SystemExit, match="not supported"):
        config.email_settings("carrier-pigeon://coop", tmp_path)


def test_env_int_names_the_variable(monkeypatch):
    monkeypatch.setenv("KIZUNA_X", "ten")
    with pytest.raises(SystemExit, match="KIZUNA_X"):
        config.env_int("KIZUNA_X", 1)
