from django.core.management.base import BaseCommand, CommandError

from kizuna.scoring import predictive_service as service
from kizuna.scoring.models import PredictiveModel, ScoringModel


class Command(BaseCommand):
    help = ("Train the predictive score of scoring models now (all active ones unless --model), print its "
            "holdout AUC and verdict, or why it was refused, and write the scores when the model is useful.")

    def add_arguments(self, parser):
        parser.add_argument("--model", type=int, help="scoring model id (default: every active model)")
        parser.add_argument("--stage", choices=service.TARGET_STAGES,
                            help="the stage to predict; saved as the model's setting (default: as set)")
        parser.add_argument("--strict", action="store_true",
                            help="exit with an error when a training is refused for lack of data")

    def handle(self, *args, model=None, stage=None, strict=False, **options):
        models = ScoringModel.objects.filter(pk=model) if model else ScoringModel.objects.filter(active=True)
        models = list(models)
        if not models:
            raise CommandError(f"no scoring model with id {model}" if model else "no active scoring model")
        refused, failed = [], []
        for scoring_model in models:
            pm = service.settings_for(scoring_model)
            if stage and (pm.pk is None or stage != pm.target_stage):
                service.update_settings(pm, target_stage=stage, retrain_days=pm.retrain_days,
                                        window_days=pm.window_days)
            try:
                pm = service.train(pm)
            except service.AlreadyTraining:
                self.stderr.write(f"{scoring_model}: a training is already running; try again when it ends.")
                failed.append(scoring_model)
                continue
            self._report(pm)
            if pm.status == PredictiveModel.Status.REFUSED:
                refused.append(scoring_model)
            elif pm.status == PredictiveModel.Status.FAILED:
                failed.append(scoring_model)
        if failed:
            raise CommandError(f"training failed for: {', '.join(map(str, failed))}")
        if strict and refused:
            raise CommandError(f"not enough data to train: {', '.join(map(str, refused))}")

    def _report(self, pm: PredictiveModel) -> None:
        name = str(pm.model)
        if pm.status == PredictiveModel.Status.REFUSED:
            self.stdout.write(self.style.WARNING(f"{name}: refused. {service.refusal_text(pm)}"))
        elif pm.status == PredictiveModel.Status.FAILED:
            self.stderr.write(f"{name}: failed: {pm.error}")
        else:
            style = self.style.SUCCESS if pm.useful else self.style.WARNING
            self.stdout.write(style(
                f"{name}: holdout AUC {pm.auc:.3f} (cross-validated {pm.cv_auc_mean:.3f} ± {pm.cv_auc_std:.3f}), "
                f"{pm.n_examples} examples, {pm.n_positive} reached {pm.trained_stage}; "
                f"{'useful' if pm.useful else 'not useful'}, {pm.n_scored} contacts scored."))
            self.stdout.write(f"  {service.verdict_text(pm)}")
            for factor in pm.factors[:5]:
                self.stdout.write(f"  {factor['direction']} {factor['name']} ({abs(factor['weight']):.2f})")
        for line in service.left_out_text(pm):
            self.stdout.write(f"  {line}")
