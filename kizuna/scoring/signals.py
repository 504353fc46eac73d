"""Signals other apps listen to: the hand-off reacts to leads turning hot."""

from django.dispatch import Signal

# Sent inside the transaction that records the alerts; `alerts` is a list of LeadAlert.
lead_turned_hot = Signal()

# Sent after engagement changed for some contacts (inside the same transaction);
# `model` is the ScoringModel, `scores` the ContactScore rows as saved.
scores_changed = Signal()
