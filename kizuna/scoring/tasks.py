"""Background work of the scoring app, run by `kizuna worker`."""

from __future__ import annotations

from django.tasks import task


@task
def train_predictive(predictive_id: int) -> dict:
    """Trains a queued predictive model; the outcome is kept on the model itself."""
    from .predictive_service import run_queued

    pm = run_queued(predictive_id)
    if pm is None:
        return {"status": "missing"}
    return {"status": pm.status, "auc": pm.auc, "useful": pm.useful}


@task
def rescore(run_id: int) -> dict:
    """Re-scores every contact of a model after a rule change (a queued RescoreRun)."""
    from .rescoring import run

    job = run(run_id)
    if job is None:
        return {"status": "taken"}
    return {"status": job.status, "total": job.total, "changed": job.changed}
