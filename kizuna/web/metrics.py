"""Prometheus metrics: what goes wrong in production shows here first.

Two kinds, for a reason:
- Counters (events received, requests, mail sent or failed, errors) are counted in the process
  that did the work, in prometheus_client's multiprocess mode: each process writes its own
  memory-mapped file under KIZUNA_METRICS_DIR and /metrics sums them, so web workers and the
  background worker on one machine add up, and a restart does not lose the totals (a process
  with a reused pid continues its file). Counting them from the database instead would mean a
  count(*) over millions of rows at every scrape. Several machines are scraped one by one and
  summed in PromQL, as Prometheus expects.
- Gauges (processing lag, backlog, outbox depth, journey steps due, notices pending) are read
  from the database when /metrics is scraped: they are the state every process shares, and
  each is an indexed count of what is waiting, which stays small while the system keeps up.
"""

from __future__ import annotations

from prometheus_client import Counter

EVENTS_RECEIVED = Counter("kizuna_events_received_total", "Events accepted by the ingestion endpoints.",
                          ["source"])
HTTP_REQUESTS = Counter("kizuna_http_requests_total", "HTTP requests answered by Django, by status class.",
                        ["status_class"])
MESSAGES_SENT = Counter("kizuna_messages_sent_total", "Email messages handed to the transport.")
MESSAGES_FAILED = Counter("kizuna_messages_failed_total", "Email messages that failed for good.")
ERRORS = Counter("kizuna_errors_total", "Errors logged, by component (logger name).", ["component"])


def count_received(source: str, n: int) -> None:
    if n:
        EVENTS_RECEIVED.labels(source=source[:64] or "-").inc(n)


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"
