import pytest
from django.urls import reverse


@pytest.mark.django_db
def test_login_page_renders_and_sets_security_headers(client):
    response = client.get(reverse("accounts:login"))
    assert response.status_code == 200
    assert "Content-Security-Policy" in response.headers
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.django_db
def test_dashboard_requires_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert reverse("accounts:login") in response["Location"]


def test_dashboard_for_admin(logged_in):
    response = logged_in.get("/")
    assert response.status_code == 200
    assert b"Dashboard" in response.content
