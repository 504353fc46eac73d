"""The import-jobs REST API: upload, start, follow, errors; capability checks and error format."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from kizuna.contacts.models import ConsentRecord, Contact, ImportJob, ImportPreset, SubscriptionTopic

pytestmark = pytest.mark.django_db

IMMEDIATE_TASKS = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend", "QUEUES": ["default"]}}
CSV = ("メールアドレス,氏名,会社名,都道府県,備考\r\n"
       "api1@example.co.jp,山田 太郎,株式会社エーピーアイ,東京都,memo\r\n"
       "not-an-email,佐藤 花子,株式会社エーピーアイ,大阪府,\r\n"
       "api2@example.co.jp,鈴木 一郎,株式会社エーピーアイ,北海道,\r\n").encode("cp932")


@pytest.fixture
def auth(users, api_token):
    def make(role: str = "marketer", scopes=("read", "write")) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Bearer {api_token(users[role], scopes)}"}

    return make


def upload(client, headers, data: bytes = CSV, name: str = "seminar.csv", kind: str = "seminar"):
    return client.post("/api/v1/import-jobs", {"file": SimpleUploadedFile(name, data), "kind": kind}, **headers)


def start(client, headers, job_id: int, **body):
    return client.post(f"/api/v1/import-jobs/{job_id}/start", body, content_type="application/json", **headers)


def test_upload_start_follow_and_read_errors(client, auth, settings, django_capture_on_commit_callbacks):
    settings.TASKS = IMMEDIATE_TASKS
    SubscriptionTopic.objects.create(key="seminars", name="Seminars")
    headers = auth("marketer")
    response = upload(client, headers)
    assert response.status_code == 201, response.content
    job = response.json()
    assert job["status"] == "draft" and job["encoding"] == "cp932"
    assert job["headers"] == ["メールアドレス", "氏名", "会社名", "都道府県", "備考"]
    assert job["mapping"] == {"メールアドレス": "email", "氏名": "full_name", "会社名": "company_name",
                              "都道府県": "prefecture"}
    assert job["samples"][0][1] == "山田 太郎"
    assert {"value": "email", "label": "Email"} in job["targets"]
    with django_capture_on_commit_callbacks(execute=True):
        response = start(client, headers, job["id"], tags=["API"], list_name="API seminar",
                         consent_topic="seminars", consent_status="opted_in", consent_source="API test")
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "queued"
    detail = client.get(f"/api/v1/import-jobs/{job['id']}", **headers).json()
    assert detail["status"] == "done"
    assert detail["counts"] == {"rows": 3, "created": 2, "updated": 0, "skipped": 0, "errors": 1}
    assert detail["progress"] == {"done": True, "percent": 100.0, "text": detail["summary"]}
    assert detail["summary"].startswith("2 imported")
    assert detail["error_report_url"] == f"/imports/{job['id']}/errors.csv"
    assert (detail["tags"], detail["list_name"], detail["consent_topic"]) == (["API"], "API seminar", "seminars")
    errors = client.get(f"/api/v1/import-jobs/{job['id']}/errors", **headers).json()
    assert errors["count"] == 1
    assert errors["items"] == [{"row": 3, "column": "メールアドレス", "value": "not-an-email",
                                "message": "invalid email address: must contain exactly one @"}]
    assert client.get(f"/api/v1/import-jobs/{job['id']}/errors?offset=1", **headers).json()["items"] == []
    assert Contact.objects.get(email="api2@example.co.jp").prefecture == "01"
    assert ConsentRecord.objects.filter(method="import", source="API test").count() == 2
    listing = client.get("/api/v1/import-jobs", **headers).json()
    assert [j["id"] for j in listing] == [job["id"]]


def test_start_with_a_preset_and_saving_one(client, auth):
    headers = auth("admin")
    ImportPreset.objects.create(name="card app", mapping={"メールアドレス": "email", "備考": "job_title"})
    job = upload(client, headers).json()
    response = start(client, headers, job["id"], preset="card app", save_preset_as="copy")
    assert response.status_code == 202
    assert response.json()["mapping"] == {"メールアドレス": "email", "備考": "job_title"}
    assert client.get("/api/v1/import-presets", **headers).json() == [
        {"name": "card app", "mapping": {"メールアドレス": "email", "備考": "job_title"}},
        {"name": "copy", "mapping": {"メールアドレス": "email", "備考": "job_title"}},
    ]


def test_invalid_start_requests_get_details_by_path(client, auth):
    headers = auth("admin")
    job = upload(client, headers).json()
    response = start(client, headers, job["id"], mapping={"メールアドレス": "email", "備考": "hobby"},
                     duplicate_policy="merge")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert {d["path"]: d["message"] for d in error["details"]} == {
        "mapping.備考": "unknown field 'hobby'", "duplicate_policy": "must be one of update, skip, fill"}
    response = start(client, headers, job["id"], mapping={"備考": "phone"})
    assert response.status_code == 422 and "email is required" in response.json()["error"]["details"][0]["message"]
    response = start(client, headers, job["id"], preset="nope")
    assert response.status_code == 422 and response.json()["error"]["details"][0]["path"] == "preset"
    assert start(client, headers, job["id"]).status_code == 202
    again = start(client, headers, job["id"])
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"


def test_unusable_uploads_are_refused(client, auth, settings):
    headers = auth("admin")
    response = upload(client, headers, data=b"Email\r\n")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_file" and error["details"][0]["path"] == "file"
    assert "no data rows" in error["message"]
    response = upload(client, headers, data=CSV, kind="poster")
    assert response.status_code == 400 and "Unknown kind" in response.json()["error"]["message"]
    settings.IMPORT_MAX_BYTES = 10
    response = upload(client, headers)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large" and "10 B" in response.json()["error"]["message"]
    assert not ImportJob.objects.exists()


def test_unknown_job_is_a_json_404(client, auth):
    response = client.get("/api/v1/import-jobs/999", **auth("admin"))
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(("role", "scopes"), [("viewer", ("read", "write")), ("sales", ("read", "write")),
                                              ("admin", ("read",))])
def test_writes_need_the_import_capability(client, auth, role, scopes):
    job = upload(client, auth("admin")).json()
    headers = auth(role, scopes)
    response = upload(client, headers)
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert "contacts.import" in response.json()["error"]["message"]
    assert start(client, headers, job["id"]).status_code == 403
    assert ImportJob.objects.get().status == "draft"
    # Reading is for everyone who may see contacts.
    assert client.get("/api/v1/import-jobs", **headers).status_code == 200
    assert client.get(f"/api/v1/import-jobs/{job['id']}", **headers).status_code == 200


def test_api_needs_credentials(client):
    response = client.get("/api/v1/import-jobs")
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthenticated"
