"""Operations: the request log, /healthz (alive), /readyz (able to serve) and /metrics.

- /healthz answers 200 as long as the process answers, and touches nothing else: a load
  balancer or orchestrator restarts a process that stops answering it.
- /readyz (and /health, its older name) answers 503 with the reasons when the database is
  unreachable, migrations are not all applied, event processing lags more than
  KIZUNA_HEALTH_MAX_LAG seconds or more than KIZUNA_READY_MAX_OUTBOX messages are due.
- /metrics is Prometheus' text format, for a bearer token or the allowed addresses only.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import time
import uuid

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.functional import empty

from kizuna.web import logs, metrics

access_log = logging.getLogger("kizuna.request")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class RequestMiddleware:
    """Gives every request an id (a sane incoming X-Request-ID, else a new one) that every log line
    of the request carries and the response returns; logs one line per request and counts it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        rid = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        request.request_id = rid
        token = logs.request_id.set(rid)
        user_token = logs.request_user.set("")
        started = time.perf_counter()
        status = 500
        try:
            response = self.get_response(request)
            status = response.status_code
            response["X-Request-ID"] = rid
            return response
        finally:
            # Only a user the request already loaded: reading it here would cost a query (or fail
            # with the database down) for pages that never needed it, such as /healthz.
            user = getattr(getattr(request, "user", None), "_wrapped", getattr(request, "user", None))
            known = user is not None and user is not empty and getattr(user, "is_authenticated", False)
            name = user.get_username() if known else ""
            metrics.HTTP_REQUESTS.labels(status_class=metrics.status_class(status)).inc()
            if not request.path.startswith(("/static/", "/healthz", "/metrics")):
                duration = round((time.perf_counter() - started) * 1000, 1)
                # The path only: query strings can carry search terms and addresses.
                access_log.info("%s %s %s %sms", request.method, request.path, status, duration, extra={
                    "method": request.method, "path": request.path, "status": status, "duration_ms": duration,
                    "user": name})
            logs.request_user.reset(user_token)
            logs.request_id.reset(token)


# --- health ----------------------------------------------------------------------------------

def healthz(request):
    return JsonResponse({"status": "ok"})


_migrated = False


def _migrations_applied() -> bool:
    """Once true, stays true for the process: reading the migration graph costs tens of ms."""
    global _migrated
    if not _migrated:
        from django.db.migrations.executor import MigrationExecutor

        executor = MigrationExecutor(connection)
        _migrated = not executor.migration_plan(executor.loader.graph.leaf_nodes())
    return _migrated


def readiness() -> tuple[bool, dict]:
    from kizuna.events.processing import lag
    from kizuna.messaging.models import Message, MessageStatus

    reasons: list[str] = []
    body: dict = {}
    try:
        connection.ensure_connection()
        events = lag()
        outbox_due = Message.objects.filter(status=MessageStatus.QUEUED, due_at__lte=timezone.now()).count()
        migrated = _migrations_applied()
    except Exception as exc:  # noqa: BLE001 - the answer must be JSON, whatever failed
        return False, {"status": "error", "database": type(exc).__name__,
                       "reasons": [f"database unreachable ({type(exc).__name__})"]}
    body.update({"database": "ok", "migrations": "ok" if migrated else "pending", "events": events,
                 "outbox_due": outbox_due})
    if not migrated:
        reasons.append("database migrations are not all applied: run `kizuna migrate`")
    limit = settings.KIZUNA_HEALTH_MAX_LAG
    if events["lag_seconds"] > limit:
        reasons.append(f"event processing is {events['lag_seconds']:.0f} s behind (limit {limit} s)")
    if outbox_due > settings.KIZUNA_READY_MAX_OUTBOX:
        reasons.append(f"{outbox_due} messages are due in the outbox (limit {settings.KIZUNA_READY_MAX_OUTBOX})")
    ok = not reasons
    body["status"] = "ok" if ok else ("lagging" if migrated else "not_ready")
    body["reasons"] = reasons
    return ok, body


def readyz(request):
    ok, body = readiness()
    return JsonResponse(body, status=200 if ok else 503, json_dumps_params={"default": str})


# --- metrics ---------------------------------------------------------------------------------

def _allowed(request) -> bool:
    from kizuna.events.http import client_ip

    token = settings.KIZUNA_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer ") and secrets.compare_digest(header[7:].strip(), token):
        return True
    try:
        address = ipaddress.ip_address(client_ip(request.META))
    except ValueError:
        return False
    for allowed in settings.KIZUNA_METRICS_ALLOWED_IPS:
        try:
            if address in ipaddress.ip_network(allowed, strict=False):
                return True
        except ValueError:
            continue
    return False


class DatabaseCollector:
    """Gauges read at scrape time from the tables every process shares."""

    def collect(self):
        from django.db.models import Count, Sum
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from kizuna.events.models import ProcessingLane
        from kizuna.events.processing import lag
        from kizuna.handoff.models import Delivery
        from kizuna.journeys.models import Enrollment
        from kizuna.messaging.models import Message, MessageStatus

        up = GaugeMetricFamily("kizuna_database_up", "1 when the database answered this scrape.")
        try:
            events = lag()
            processed = ProcessingLane.objects.aggregate(n=Sum("processed"))["n"] or 0
            waiting = [MessageStatus.QUEUED, MessageStatus.HELD, MessageStatus.SENDING, MessageStatus.UNKNOWN]
            outbox = dict(Message.objects.filter(status__in=waiting).order_by().values_list("status").annotate(
                n=Count("id")))
            now = timezone.now()
            due = Enrollment.objects.filter(state__in=[Enrollment.State.ACTIVE, Enrollment.State.WAITING],
                                            due_at__lte=now).count()
            pending = Delivery.objects.filter(status=Delivery.Status.PENDING).count()
        except Exception:  # noqa: BLE001 - the scrape still answers, saying the database did not
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily("kizuna_events_processing_lag_seconds",
                                "Age of the oldest event waiting to be processed.", value=events["lag_seconds"])
        yield GaugeMetricFamily("kizuna_events_backlog", "Events accepted and waiting to be processed.",
                                value=events["pending"])
        yield GaugeMetricFamily("kizuna_events_failed", "Events whose processing failed, waiting for a retry.",
                                value=events["failed"])
        yield CounterMetricFamily("kizuna_events_processed", "Events processed, all processes together.",
                                  value=processed)
        family = GaugeMetricFamily("kizuna_outbox_messages", "Messages in the outbox not yet settled, by status.",
                                   labels=["status"])
        for status in waiting:
            family.add_metric([status.value], outbox.get(status.value, 0))
        yield family
        yield GaugeMetricFamily("kizuna_journey_enrollments_due", "Journey steps due now or overdue.", value=due)
        yield GaugeMetricFamily("kizuna_handoff_deliveries_pending", "Hot-lead notices and webhooks not yet sent.",
                                value=pending)


def metrics_view(request):
    if not _allowed(request):
        return HttpResponse("forbidden: send 'Authorization: Bearer <KIZUNA_METRICS_TOKEN>' or scrape from an "
                            "address in KIZUNA_METRICS_ALLOWED_IPS\n", status=403, content_type="text/plain")
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(DatabaseCollector())
    response = HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
