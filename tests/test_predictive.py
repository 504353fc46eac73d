"""Predictive lead score on synthetic leads: judged honestly, explains itself, stores and reloads."""

import dataclasses
from datetime import UTC, datetime

import pytest

from kizuna.scoring import predictive
from kizuna.scoring.predictive import (
    Example,
    IncompatibleModel,
    NotEnoughData,
    TrainedModel,
    make_synthetic,
    seniority,
    train,
)

PLANTED = {"pricing_views (log)", "email_clicks_human (log)", "seniority = executive", "industry = 製造業"}


@pytest.fixture(scope="module")
def signal_examples() -> list[Example]:
    return make_synthetic(3000, signal=True, seed=0)


@pytest.fixture(scope="module")
def signal_model(signal_examples) -> TrainedModel:
    return train(signal_examples, seed=0, trained_at=datetime(2026, 4, 1, tzinfo=UTC))


@pytest.fixture(scope="module")
def noise_model() -> TrainedModel:
    return train(make_synthetic(3000, signal=False, seed=0), seed=0)


def _rows(examples: list[Example], n: int = 400) -> list[tuple[dict, dict]]:
    return [(dict(e.profile), dict(e.behaviour)) for e in examples[:n]]


def _mean_score(model: TrainedModel, rows: list[tuple[dict, dict]], **changes) -> float:
    changed = []
    for profile, behaviour in rows:
        profile, behaviour = dict(profile), dict(behaviour)
        for key, value in changes.items():
            (behaviour if key in behaviour else profile)[key] = value
        changed.append((profile, behaviour))
    scores = model.score(changed)
    return sum(scores) / len(scores)


def test_synthetic_data_looks_like_leads():
    examples = make_synthetic(2000, signal=False, seed=3)
    rate = sum(e.label for e in examples) / len(examples)
    assert 0.12 < rate < 0.18
    industries = {e.profile["industry"] for e in examples}
    assert industries >= {"製造業", "情報通信業", "卸売業・小売業", "建設業", "金融業・保険業"}
    assert all(e.behaviour["page_views"] >= e.behaviour["pricing_views"] >= 0 for e in examples)
    assert "lifecycle_stage" not in examples[0].profile
    signal_rate = sum(e.label for e in make_synthetic(2000, signal=True, seed=3)) / 2000
    assert 0.12 < signal_rate < 0.18


def test_signal_is_found_and_judged_useful(signal_model):
    assert signal_model.auc >= 0.8
    assert signal_model.cv_auc_mean - 2 * signal_model.cv_auc_std > 0.55
    assert signal_model.useful is True
    assert signal_model.verdict.startswith(f"Holdout AUC {signal_model.auc:.2f}:")
    assert "well" in signal_model.verdict
    assert signal_model.n_examples == 3000
    assert 300 < signal_model.n_positive < 600
    assert signal_model.trained_at == datetime(2026, 4, 1, tzinfo=UTC)
    top = {f.name: f for f in signal_model.factors[:6]}
    assert PLANTED <= set(top)
    assert all(top[name].direction == "+" and top[name].weight > 0 for name in PLANTED)
    weights = [abs(f.weight) for f in signal_model.factors]
    assert weights == sorted(weights, reverse=True)


def test_noise_is_judged_useless(noise_model):
    assert 0.4 <= noise_model.auc <= 0.6
    assert noise_model.useful is False
    assert "do not use this score" in noise_model.verdict
    assert "chance" in noise_model.verdict


def test_high_holdout_auc_with_unstable_folds_is_not_useful():
    verdict = predictive._verdict(0.7, 0.6, 0.05, False, 0.65)
    assert "unstable" in verdict and "do not use this score" in verdict


def test_not_enough_examples():
    with pytest.raises(NotEnoughData) as caught:
        train(make_synthetic(100, signal=True, seed=1))
    error = caught.value
    message = str(error).lower()
    assert "100 examples" in message
    assert f"{error.n_positive} positive and {error.n_negative} negative" in message
    assert error.n_positive + error.n_negative == 100
    assert "at least 200 examples" in message and "at least 30 positive and 30 negative" in message


def test_not_enough_positives():
    examples = make_synthetic(500, signal=False, seed=2)
    examples = [dataclasses.replace(e, label=i < 5) for i, e in enumerate(examples)]
    with pytest.raises(NotEnoughData, match=r"500 examples, 5 positive and 495 negative") as caught:
        train(examples)
    assert isinstance(caught.value, ValueError)
    assert (caught.value.n_positive, caught.value.n_negative) == (5, 495)


def test_thresholds_are_configurable():
    examples = make_synthetic(150, signal=True, seed=4)
    with pytest.raises(NotEnoughData):
        train(examples)
    model = train(examples, min_examples=100, min_per_class=10)
    assert model.n_examples == 150


@pytest.mark.parametrize(
    ("title", "level"),
    [
        ("代表取締役社長", "executive"), ("執行役員", "executive"), ("営業本部長", "executive"),
        ("事業部長", "executive"), ("CEO", "executive"), ("VP of Sales", "executive"),
        ("Director, Marketing", "executive"), ("マーケティング課長", "manager"), ("マネージャー", "manager"),
        ("Product Manager", "manager"), ("係長", "lead"), ("主任", "lead"), ("チームリーダー", "lead"),
        ("Tech Lead", "lead"), ("担当", "staff"), ("エンジニア", "staff"), ("Leadership coach", "staff"),
        ("", "(none)"), (None, "(none)"),
    ],
)
def test_seniority(title, level):
    assert seniority(title) == level


def test_unknown_and_missing_values_do_not_crash(signal_model, signal_examples):
    rows = [
        ({"industry": "宇宙産業", "prefecture": "火星", "company_size": "5000+", "job_title": "Chief Happiness Officer",
          "source": "podcast", "new_field": "x"}, {"pricing_views": 2, "video_plays": 40}),
        ({}, {}),
        ({"industry": None, "job_title": None}, {"page_views": None, "sessions": -3, "email_clicks_human": "n/a"}),
        {"profile": {"industry": "製造業"}, "behaviour": {"pricing_views": 1}},
        {"industry": "製造業", "pricing_views": 1},
        signal_examples[0],
    ]
    scores = signal_model.score(rows)
    assert len(scores) == len(rows)
    assert all(isinstance(s, int) and 0 <= s <= 100 for s in scores)
    assert scores[3] == scores[4]  # nested and flat dicts mean the same lead
    assert signal_model.score([]) == []
    with pytest.raises(TypeError):
        signal_model.score([42])


def test_scores_are_calibrated_percentages(signal_model, noise_model, signal_examples):
    rows = _rows(signal_examples, 3000)
    scores = signal_model.score(rows)
    assert all(0 <= s <= 100 for s in scores)
    assert min(scores) < 10 and max(scores) > 60
    rate = 100 * signal_model.n_positive / signal_model.n_examples
    assert abs(sum(scores) / len(scores) - rate) < 3
    noise_scores = noise_model.score(rows)
    assert max(noise_scores) - min(noise_scores) <= 15  # no signal: everyone near the base rate


def test_scores_rise_with_the_planted_signal(signal_model, signal_examples):
    rows = _rows(signal_examples)
    by_pricing = [_mean_score(signal_model, rows, pricing_views=v) for v in (0, 1, 3, 8)]
    assert by_pricing == sorted(by_pricing) and by_pricing[-1] - by_pricing[0] > 20
    by_clicks = [_mean_score(signal_model, rows, email_clicks_human=v) for v in (0, 1, 3, 8)]
    assert by_clicks == sorted(by_clicks) and by_clicks[-1] - by_clicks[0] > 15
    assert _mean_score(signal_model, rows, job_title="取締役") > _mean_score(signal_model, rows, job_title="担当") + 3
    assert _mean_score(signal_model, rows, industry="製造業") > _mean_score(signal_model, rows, industry="建設業") + 3


def test_round_trip_through_bytes(signal_model, signal_examples):
    data = signal_model.to_bytes()
    assert isinstance(data, bytes)
    loaded = TrainedModel.from_bytes(data)
    rows = _rows(signal_examples, 500)
    assert loaded.score(rows) == signal_model.score(rows)
    assert loaded.probabilities(rows) == signal_model.probabilities(rows)
    assert (loaded.auc, loaded.factors, loaded.verdict, loaded.trained_at) == (
        signal_model.auc, signal_model.factors, signal_model.verdict, signal_model.trained_at)


def test_stored_bytes_from_elsewhere_are_refused(signal_model):
    magic, version, sklearn_version, body = signal_model.to_bytes().split(b"\n", 3)
    with pytest.raises(IncompatibleModel, match="format"):
        TrainedModel.from_bytes(b"\n".join([magic, b"999", sklearn_version, body]))
    with pytest.raises(IncompatibleModel, match="scikit-learn 0.1"):
        TrainedModel.from_bytes(b"\n".join([magic, version, b"0.1", body]))
    with pytest.raises(IncompatibleModel):
        TrainedModel.from_bytes(b"something else entirely")


def test_same_seed_same_model():
    assert make_synthetic(800, signal=True, seed=7) == make_synthetic(800, signal=True, seed=7)
    assert make_synthetic(800, signal=True, seed=7) != make_synthetic(800, signal=True, seed=8)
    examples = make_synthetic(800, signal=True, seed=7)
    first, second = train(examples, seed=5), train(examples, seed=5)
    assert (first.auc, first.cv_auc_mean, first.cv_auc_std) == (second.auc, second.cv_auc_mean, second.cv_auc_std)
    assert first.factors == second.factors and first.calibration == second.calibration
    rows = _rows(examples, 200)
    assert first.score(rows) == second.score(rows)
