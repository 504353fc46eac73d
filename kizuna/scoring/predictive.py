"""Predictive lead score: learn from past contacts which ones went on to reach a target stage.

Plain functions over plain data, so the caller decides how examples are gathered (which cut-off,
which window, which horizon) and where the trained model is stored. Each `Example` is a contact
seen at a cut-off moment: its profile then, its behaviour in a window before, and whether it
reached the target stage within the horizon after. The lifecycle stage at the cut-off must not be
part of the profile: it would leak the answer.

The model is deliberately simple — a logistic regression over one-hot profile values and
log-scaled behaviour counts — so that its factors can be shown to a marketer, and it is always
judged on data it has not seen (holdout AUC, plus a cross-validated AUC for stability) before the
UI recommends using it.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import sklearn
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_val_score, train_test_split
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

Profile = dict[str, str | int | float | None]
Behaviour = dict[str, float]

FORMAT_VERSION = 1
_MAGIC = b"kizuna-predictive-score"

MIN_EXAMPLES = 200
MIN_PER_CLASS = 30
MIN_AUC = 0.65
MIN_CV_LOWER = 0.55
MIN_CATEGORY_COUNT = 10  # rarer profile values share one "(other)" column instead of one noisy column each
N_FACTORS = 10

TITLE_FIELDS = frozenset({"job_title", "title"})
# Fields that describe where the contact already is in the funnel would leak the label.
LEAKY_FIELDS = frozenset({"lifecycle_stage", "lifecycle", "stage"})
MISSING = "(none)"
_OTHER = "(other)"

_SENIORITY: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "executive",
        re.compile(
            r"部長|本部長|事業部長|取締役|社長|役員|代表|CEO|CTO|CFO|COO|CMO|CIO|\bchief\b|\bdirector\b|\bVP\b"
            r"|vice[ -]president|\bpresident\b|\bhead of\b",
            re.IGNORECASE,
        ),
    ),
    ("manager", re.compile(r"課長|マネージャー|マネジャー|\bmanager\b", re.IGNORECASE)),
    ("lead", re.compile(r"主任|係長|リーダー|\blead\b|\bleader\b", re.IGNORECASE)),
)


def seniority(title: object) -> str:
    """A handful of seniority levels: free-text titles are too varied for one column each."""
    if title is None or (isinstance(title, float) and math.isnan(title)):
        return MISSING
    text = str(title).strip()
    if not text:
        return MISSING
    for level, pattern in _SENIORITY:
        if pattern.search(text):
            return level
    return "staff"


@dataclass
class Example:
    profile: Profile
    behaviour: Behaviour
    label: bool


@dataclass(frozen=True)
class Factor:
    """One model feature with its standardised weight, for "why does this lead score high"."""

    name: str
    direction: str  # "+" raises the score, "−" lowers it
    weight: float  # coefficient × the feature's standard deviation: comparable across features


class NotEnoughData(ValueError):
    """Too few examples (or too few of one class) for the holdout and the folds to mean anything."""

    def __init__(self, n_positive: int, n_negative: int, min_examples: int, min_per_class: int) -> None:
        self.n_positive = n_positive
        self.n_negative = n_negative
        self.min_examples = min_examples
        self.min_per_class = min_per_class
        super().__init__(
            f"Not enough data to train a predictive score: {n_positive + n_negative} examples, "
            f"{n_positive} positive and {n_negative} negative. At least {min_examples} examples "
            f"with at least {min_per_class} positive and {min_per_class} negative are needed."
        )


class IncompatibleModel(ValueError):
    """Stored bytes from another format or scikit-learn version: retrain instead of guessing."""


# --- pipeline pieces (module level so that a trained pipeline pickles by reference) ---


def _pair(row: object) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """Accepts an Example, {"profile": …, "behaviour": …}, a (profile, behaviour) pair or one flat dict."""
    if isinstance(row, Example):
        return row.profile, row.behaviour
    if isinstance(row, tuple) and len(row) == 2:
        return row[0] or {}, row[1] or {}
    if isinstance(row, Mapping):
        if "profile" in row or "behaviour" in row:
            return row.get("profile") or {}, row.get("behaviour") or {}
        return row, row
    raise TypeError(f"cannot score {type(row).__name__}: expected an Example, a dict or a (profile, behaviour) pair")


def _category(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    text = str(value).strip()
    return text or MISSING


def _number(value: object, default: float) -> float:
    if value is None or isinstance(value, bool):
        return default
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return default if math.isnan(number) or math.isinf(number) else number


class _Select(BaseEstimator, TransformerMixin):
    """Turns rows into one column per field; `kind` says how values are read."""

    def __init__(self, fields: tuple[str, ...] = (), part: str = "profile", kind: str = "category") -> None:
        self.fields = fields
        self.part = part
        self.kind = kind

    def fit(self, X: Sequence[object], y: object = None) -> _Select:
        return self

    def transform(self, X: Sequence[object]) -> np.ndarray:
        index = 0 if self.part == "profile" else 1
        data = [_pair(row)[index] for row in X]
        if self.kind == "category":
            readers = [seniority if f in TITLE_FIELDS else _category for f in self.fields]
            cells = [[read(d.get(f)) for read, f in zip(readers, self.fields, strict=True)] for d in data]
            return np.array(cells, dtype=object).reshape(len(data), len(self.fields))
        default = math.nan if self.kind == "number" else 0.0
        values = np.array([[_number(d.get(f), default) for f in self.fields] for d in data], dtype=float)
        values = values.reshape(len(data), len(self.fields))
        # Counts cannot be negative; clipping keeps log1p defined for sloppy input.
        return np.clip(values, 0.0, None) if self.kind == "count" else values

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        names = ["seniority" if f in TITLE_FIELDS and self.kind == "category" else f for f in self.fields]
        return np.array(names, dtype=object)


def _combine(feature: str, category: object) -> str:
    if str(category) == "infrequent_sklearn":
        category = _OTHER
    return f"{feature} = {category}"


def _log_names(transformer: object, input_features: Sequence[str]) -> list[str]:
    return [f"{name} (log)" for name in input_features]


def _build_pipeline(category_fields: tuple[str, ...], number_fields: tuple[str, ...],
                    count_fields: tuple[str, ...]) -> Pipeline:
    parts: list[tuple[str, Any]] = []
    if category_fields:
        parts.append(("profile", Pipeline([
            ("select", _Select(category_fields, "profile", "category")),
            ("onehot", OneHotEncoder(handle_unknown="ignore", min_frequency=MIN_CATEGORY_COUNT, sparse_output=False,
                                     feature_name_combiner=_combine)),
        ])))
    if number_fields:
        parts.append(("profile_numbers", Pipeline([
            ("select", _Select(number_fields, "profile", "number")),
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
        ])))
    if count_fields:
        parts.append(("behaviour", Pipeline([
            ("select", _Select(count_fields, "behaviour", "count")),
            # Counts are heavy-tailed: the 50th page view says less than the 2nd.
            ("log", FunctionTransformer(np.log1p, feature_names_out=_log_names)),
            ("scale", StandardScaler()),
        ])))
    return Pipeline([
        ("features", FeatureUnion(parts, verbose_feature_names_out=False)),
        # Balanced weights so a 15 % base rate does not drown the minority class; scores are
        # recalibrated afterwards, so the shifted probabilities never reach the user.
        ("model", LogisticRegression(class_weight="balanced", max_iter=2000)),
    ])


def _fields(examples: Sequence[Example]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Profile fields holding only numbers are numeric; any text makes a field categorical."""
    profile_keys: dict[str, bool] = {}
    behaviour_keys: dict[str, None] = {}
    for example in examples:
        for key, value in example.profile.items():
            if key in LEAKY_FIELDS:
                continue
            numeric = value is None or (isinstance(value, int | float) and not isinstance(value, bool))
            profile_keys[key] = profile_keys.get(key, True) and numeric
        for key in example.behaviour:
            behaviour_keys[key] = None
    has_value = {k for e in examples for k, v in e.profile.items() if v is not None}
    categories = tuple(sorted(k for k, numeric in profile_keys.items() if not numeric or k in TITLE_FIELDS))
    numbers = tuple(sorted(k for k, numeric in profile_keys.items()
                           if numeric and k in has_value and k not in TITLE_FIELDS))
    return categories, numbers, tuple(sorted(behaviour_keys))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# --- the trained model ---


@dataclass
class TrainedModel:
    pipeline: Pipeline
    auc: float  # on the holdout, never seen while fitting
    cv_auc_mean: float
    cv_auc_std: float
    n_examples: int
    n_positive: int
    factors: list[Factor]
    useful: bool
    verdict: str
    # Platt scaling (slope, intercept) on the decision function, fitted on out-of-fold predictions:
    # turns the class-balanced model's output back into the real probability.
    calibration: tuple[float, float] = (1.0, 0.0)
    trained_at: datetime | None = None

    def probabilities(self, rows: Iterable[object]) -> list[float]:
        rows = list(rows)
        if not rows:
            return []
        slope, intercept = self.calibration
        return [float(p) for p in _sigmoid(slope * self.pipeline.decision_function(rows) + intercept)]

    def score(self, rows: Iterable[object]) -> list[int]:
        """0–100: the calibrated chance, in percent, that the lead reaches the target stage."""
        return [int(round(100 * p)) for p in self.probabilities(rows)]

    def to_bytes(self) -> bytes:
        """For a BinaryField; the header lets `from_bytes` refuse what it cannot safely load."""
        header = b"%s\n%d\n%s\n" % (_MAGIC, FORMAT_VERSION, sklearn.__version__.encode())
        return header + pickle.dumps(self, protocol=5)

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainedModel:
        """Only for bytes this module wrote (our own database): pickle runs code while loading."""
        parts = bytes(data).split(b"\n", 3)
        if len(parts) != 4 or parts[0] != _MAGIC:
            raise IncompatibleModel("not a stored predictive score model")
        version, sklearn_version = parts[1].decode(), parts[2].decode()
        if version != str(FORMAT_VERSION):
            raise IncompatibleModel(f"stored model has format {version}, this version reads {FORMAT_VERSION}: retrain")
        if sklearn_version != sklearn.__version__:
            raise IncompatibleModel(
                f"stored model was trained with scikit-learn {sklearn_version}, "
                f"this is {sklearn.__version__}: retrain"
            )
        model = pickle.loads(parts[3])  # noqa: S301 — our own bytes, header checked above
        if not isinstance(model, cls):
            raise IncompatibleModel("stored bytes do not hold a predictive score model")
        return model


def _factors(pipeline: Pipeline, rows: Sequence[object], n: int) -> list[Factor]:
    features = pipeline.named_steps["features"]
    names = features.get_feature_names_out()
    matrix = np.asarray(features.transform(rows), dtype=float)
    coefficients = pipeline.named_steps["model"].coef_[0]
    weights = coefficients * matrix.std(axis=0)
    order = np.argsort(-np.abs(weights), kind="stable")
    return [
        Factor(name=str(names[i]), direction="+" if weights[i] > 0 else "−", weight=round(float(weights[i]), 4))
        for i in order[:n]
        if abs(weights[i]) > 1e-6
    ]


def verdict_kind(auc: float, useful: bool, min_auc: float = MIN_AUC) -> str:
    """The verdict as a key ("strong", "moderate", "unstable", "chance", "weak"), for callers
    that word it themselves, e.g. in the reader's language."""
    if useful:
        return "strong" if auc >= 0.8 else "moderate"
    if auc >= min_auc:
        return "unstable"
    if auc < 0.6:
        return "chance"
    return "weak"


def _verdict(auc: float, cv_mean: float, cv_std: float, useful: bool, min_auc: float) -> str:
    head = f"Holdout AUC {auc:.2f}"
    kind = verdict_kind(auc, useful, min_auc)
    if kind == "strong":
        return f"{head}: the model separates future customers from others well."
    if kind == "moderate":
        return f"{head}: the model separates future customers from others moderately — use it as a hint."
    if kind == "unstable":
        return (f"{head}, but cross-validated AUC {cv_mean:.2f} ± {cv_std:.2f} is unstable — "
                "do not use this score yet; gather more data.")
    if kind == "chance":
        return f"{head}: no better than chance — do not use this score."
    return f"{head}: too weak to rank leads — do not use this score."


def train(
    examples: Sequence[Example],
    *,
    seed: int = 0,
    holdout: float = 0.25,
    trained_at: datetime | None = None,
    min_examples: int = MIN_EXAMPLES,
    min_per_class: int = MIN_PER_CLASS,
    min_auc: float = MIN_AUC,
    min_cv_lower: float = MIN_CV_LOWER,
    n_factors: int = N_FACTORS,
) -> TrainedModel:
    """Fits, judges on held-out data, then refits on everything for use.

    `useful` needs both a holdout AUC of at least `min_auc` and a cross-validated lower bound
    (mean − 2·std over 5 folds) above `min_cv_lower`: one holdout split of a few hundred leads can
    be lucky, and a score that flips between folds would rank leads differently after every retrain.
    """
    if not 0 < holdout < 1:
        raise ValueError("holdout must be between 0 and 1")
    examples = list(examples)
    labels = np.array([bool(e.label) for e in examples], dtype=int)
    n_positive = int(labels.sum())
    n_negative = len(examples) - n_positive
    if len(examples) < min_examples or min(n_positive, n_negative) < min_per_class:
        raise NotEnoughData(n_positive, n_negative, min_examples, min_per_class)

    rows = [(e.profile, e.behaviour) for e in examples]
    category_fields, number_fields, count_fields = _fields(examples)
    if not (category_fields or number_fields or count_fields):
        raise ValueError("examples have no profile or behaviour fields")

    def build() -> Pipeline:
        return _build_pipeline(category_fields, number_fields, count_fields)

    index = np.arange(len(rows))
    train_index, test_index = train_test_split(index, test_size=holdout, stratify=labels, random_state=seed)
    train_rows = [rows[i] for i in train_index]
    test_rows = [rows[i] for i in test_index]
    judged = build().fit(train_rows, labels[train_index])
    auc = float(roc_auc_score(labels[test_index], judged.decision_function(test_rows)))

    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    cv_scores = cross_val_score(build(), train_rows, labels[train_index], cv=folds, scoring="roc_auc")
    cv_mean, cv_std = float(np.mean(cv_scores)), float(np.std(cv_scores))

    pipeline = build().fit(rows, labels)
    out_of_fold = cross_val_predict(build(), rows, labels, cv=folds, method="decision_function")
    platt = LogisticRegression(C=1e4, max_iter=1000).fit(out_of_fold.reshape(-1, 1), labels)
    slope, intercept = float(platt.coef_[0][0]), float(platt.intercept_[0])
    if slope <= 0:  # the ranking does not hold out of sample: give everyone the base rate
        base = n_positive / len(examples)
        slope, intercept = 0.0, math.log(base / (1 - base))

    useful = auc >= min_auc and cv_mean - 2 * cv_std > min_cv_lower
    return TrainedModel(
        pipeline=pipeline,
        auc=auc,
        cv_auc_mean=cv_mean,
        cv_auc_std=cv_std,
        n_examples=len(examples),
        n_positive=n_positive,
        factors=_factors(pipeline, rows, n_factors),
        useful=useful,
        verdict=_verdict(auc, cv_mean, cv_std, useful, min_auc),
        calibration=(slope, intercept),
        trained_at=trained_at,
    )


# --- synthetic data for tests and the demo ---

INDUSTRIES = (
    "製造業", "情報通信業", "卸売業・小売業", "建設業", "金融業・保険業", "サービス業", "不動産業", "運輸業・郵便業",
)
_INDUSTRY_WEIGHTS = (0.24, 0.22, 0.16, 0.1, 0.08, 0.1, 0.05, 0.05)
PREFECTURES = (
    "東京都", "大阪府", "愛知県", "神奈川県", "福岡県", "埼玉県", "北海道", "京都府", "兵庫県", "広島県", "宮城県",
    "静岡県", "新潟県", "沖縄県",
)
_PREFECTURE_WEIGHTS = (0.34, 0.14, 0.1, 0.09, 0.06, 0.05, 0.04, 0.04, 0.04, 0.03, 0.02, 0.02, 0.02, 0.01)
COMPANY_SIZES = ("1-9", "10-49", "50-299", "300-999", "1000+")
_SIZE_WEIGHTS = (0.12, 0.26, 0.32, 0.18, 0.12)
TITLES = (
    ("代表取締役社長", 0.03), ("取締役", 0.03), ("執行役員", 0.03), ("事業部長", 0.04), ("営業部長", 0.05),
    ("情報システム部長", 0.03), ("CTO", 0.01), ("マーケティング課長", 0.05), ("営業課長", 0.05),
    ("マネージャー", 0.05), ("Marketing Manager", 0.02), ("係長", 0.05), ("主任", 0.07), ("チームリーダー", 0.04),
    ("担当", 0.12), ("営業担当", 0.08), ("エンジニア", 0.08), ("一般社員", 0.06), ("事務", 0.04), (None, 0.04),
)
SOURCES = ("organic", "広告", "展示会", "ウェビナー", "紹介", "direct", "資料ダウンロード")
_SOURCE_WEIGHTS = (0.3, 0.18, 0.12, 0.14, 0.06, 0.12, 0.08)
BASE_RATE = 0.15


def _intercept_for(logits: np.ndarray, rate: float) -> float:
    low, high = -20.0, 20.0
    for _ in range(60):
        middle = (low + high) / 2
        if _sigmoid(logits + middle).mean() < rate:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def make_synthetic(n: int, *, signal: bool, seed: int = 0) -> list[Example]:
    """Japanese B2B leads at a cut-off. With `signal`, reaching the stage depends (noisily) on
    pricing page views, human email clicks, an executive title and the 製造業 industry; without it
    the label is an independent coin with the same ~15 % base rate."""
    rng = np.random.default_rng(seed)

    def pick(values: Sequence[Any], weights: Sequence[float]) -> Any:
        p = np.asarray(weights, dtype=float)
        return values[int(rng.choice(len(values), p=p / p.sum()))]

    titles = [t for t, _ in TITLES]
    title_weights = [w for _, w in TITLES]
    profiles: list[Profile] = []
    behaviours: list[Behaviour] = []
    for _ in range(n):
        profile: Profile = {
            "industry": pick(INDUSTRIES, _INDUSTRY_WEIGHTS),
            "prefecture": pick(PREFECTURES, _PREFECTURE_WEIGHTS),
            "company_size": pick(COMPANY_SIZES, _SIZE_WEIGHTS),
            "job_title": pick(titles, title_weights),
            "source": pick(SOURCES, _SOURCE_WEIGHTS),
        }
        if rng.random() < 0.05:
            profile["industry"] = None
        interest = rng.gamma(1.2, 1.0)  # some leads are simply more active than others
        sessions = int(rng.poisson(1 + 3 * interest))
        page_views = sessions + int(rng.poisson(2.5 * sessions))
        opens = int(rng.poisson(1.5 + 2 * interest))
        behaviour: Behaviour = {
            "sessions": float(sessions),
            "page_views": float(page_views),
            "pricing_views": float(rng.binomial(page_views, 0.06)) if page_views else 0.0,
            "form_submits": float(rng.poisson(0.15 * interest)),
            "email_opens_human": float(opens),
            "email_clicks_human": float(rng.binomial(opens, 0.18)) if opens else 0.0,
            "days_since_last_activity": float(rng.integers(0, 15) if sessions else rng.integers(15, 91)),
        }
        profiles.append(profile)
        behaviours.append(behaviour)

    if signal:
        logits = np.array([
            2.2 * math.log1p(b["pricing_views"])
            + 1.8 * math.log1p(b["email_clicks_human"])
            + (1.6 if seniority(p["job_title"]) == "executive" else 0.0)
            + (1.3 if p["industry"] == "製造業" else 0.0)
            for p, b in zip(profiles, behaviours, strict=True)
        ])
        probabilities = _sigmoid(logits + _intercept_for(logits, BASE_RATE))
    else:
        probabilities = np.full(n, BASE_RATE)
    labels = rng.random(n) < probabilities
    return [Example(p, b, bool(y)) for p, b, y in zip(profiles, behaviours, labels, strict=True)]
