"""Stages after identity and enrichment subscribe here, explicitly, in settings.

`KIZUNA_EVENT_HANDLERS` lists dotted paths of callables `handler(events, *, replay)`; they run
in order inside the processing transaction, so their effects commit exactly once together with
the events. `replay=True` means anonymous history that has just been linked to a contact: a
handler treats those events as if they had been known when they happened.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import TYPE_CHECKING, Protocol

from django.conf import settings
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from kizuna.events.models import Event


class EventHandler(Protocol):
    def __call__(self, events: Sequence[Event], *, replay: bool) -> None: ...


@cache
def handlers() -> tuple[EventHandler, ...]:
    return tuple(import_string(path) for path in getattr(settings, "KIZUNA_EVENT_HANDLERS", ()))


def dispatch(events: Sequence[Event], *, replay: bool = False) -> None:
    if not events:
        return
    for handler in handlers():
        handler(events, replay=replay)


def reset() -> Callable[[], None]:
    """Forget the loaded handlers (tests that change the setting call this)."""
    handlers.cache_clear()
    return handlers.cache_clear
