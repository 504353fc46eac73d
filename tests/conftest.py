"""Shared fixtures. The data directory is per test session (tests/testenv.py), never ./var."""

import pytest
from django.core.cache import cache

ROLES = ["admin", "marketer", "sales", "viewer"]
PASSWORD = "correct-horse-battery-9"


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def make_user(db):
    from kizuna.accounts.models import User

    def make(role: str = "admin", username: str | None = None, **extra):
        user = User(username=username or f"{role}-user", role=role, **extra)
        user.set_password(PASSWORD)
        user.save()
        return user

    return make


@pytest.fixture
def users(make_user):
    return {role: make_user(role) for role in ROLES}


@pytest.fixture
def admin_user(make_user):
    return make_user("admin", username="admin")


@pytest.fixture
def logged_in(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def api_token(db):
    """api_token(user, scopes) -> 'kz_…' bearer token."""
    from kizuna.accounts.models import ApiKey

    def make(user, scopes=("read", "write")):
        _key, token = ApiKey.issue(user=user, name=f"{user.username}-key", scopes=list(scopes))
        return token

    return make
