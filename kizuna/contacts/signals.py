"""Signals other apps listen to (the lifecycle records stage transitions from these)."""

from django.dispatch import Signal

# Sent by services.create_contact / update_contact inside their transaction, with
# actor, contact, changes ({field: [before, after]}), created (bool) and via ("manual", "api", ...).
contact_saved = Signal()
