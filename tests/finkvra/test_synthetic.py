"""Tests of finkvra.synthetic: schema, encoder, Fink's light-curve features, the generator."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import math
import re
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import fastavro
import numpy as np
import pandas as pd
import pytest
from fastavro.validation import validate

from finkvra.alerts import read_alerts
from finkvra.avro import decode_message
from finkvra.synthetic import (
    CLASSES,
    LC_FEATURE_NAMES,
    AlertGenerator,
    alert_schema,
    fink_lc_features,
)
from tests.helpers import fastavro_bytes


@pytest.fixture(scope="module")
def stream():
    """1,200 labelled alerts of seed 7 (the default generator)."""
    return list(AlertGenerator(seed=7).labelled(1200))


def same(a, b) -> bool:
    """Equality of decoded alerts: NaN equals NaN, and types must match (int is not float)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


# --------------------------------------------------------------------------- schema


def _shape(schema, named):
    """Structure of a schema with record names dropped (and references resolved)."""
    if isinstance(schema, str):
        return named.get(schema, named.get(schema.split(".")[-1], schema))
    if isinstance(schema, list):
        return [_shape(s, named) for s in schema]
    kind = schema["type"]
    if kind == "record":
        shape = ("record", [(f["name"], _shape(f["type"], named)) for f in schema["fields"]])
        named[schema["name"]] = named[schema["name"].split(".")[-1]] = shape
        return shape
    if kind == "array":
        return ("array", _shape(schema["items"], named))
    if kind == "map":
        return ("map", _shape(schema["values"], named))
    return kind


def test_schema_has_fink_field_names_types_and_nesting(real_avro):
    writer_schema, _ = real_avro
    ours = alert_schema()
    assert _shape(ours, {}) == _shape(writer_schema, {})
    fastavro.parse_schema(ours)  # a valid schema


def test_alert_schema_is_a_fresh_copy_of_the_package_file():
    import finkvra

    path = Path(finkvra.__file__).parent / "schemas" / "fink_ztf_alert.avsc"
    on_disk = json.loads(path.read_text())
    first = alert_schema()
    assert first == on_disk
    first["fields"].clear()
    assert alert_schema() == on_disk


# --------------------------------------------------------------------------- encoder


# --------------------------------------------------------------------------- Fink's features


def _features_from_alert(alert):
    points = [p for p in (alert["prv_candidates"] or []) + [alert["candidate"]]]
    points = [p for p in points if p["magpsf"] is not None]

    def column(name):
        return np.array([np.nan if p[name] is None else p[name] for p in points], dtype=float)

    return fink_lc_features(
        column("jd"),
        np.array([p["fid"] for p in points]),
        column("magpsf"),
        column("sigmapsf"),
        column("distnr"),
        column("magnr"),
        column("sigmagnr"),
        np.array([p["isdiffpos"] in ("t", "1") for p in points], dtype=bool),
    )


def _close(ours, theirs) -> bool:
    a = np.array([ours[n] for n in LC_FEATURE_NAMES], dtype=float)
    b = np.array([np.nan if theirs[n] is None else theirs[n] for n in LC_FEATURE_NAMES])
    return bool(np.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True))


def test_lc_features_reproduce_what_fink_computed(real_avro):
    _, alerts = real_avro
    for alert in alerts:
        g, r = _features_from_alert(alert)
        assert list(g) == list(LC_FEATURE_NAMES)
        assert _close(g, alert["lc_features_g"]), alert["objectId"]
        assert _close(r, alert["lc_features_r"]), alert["objectId"]


def test_generated_lc_features_follow_fink_recipe(stream):
    defined = 0
    for alert, _ in stream[:400]:
        g, r = _features_from_alert(alert)
        assert _close(g, alert["lc_features_g"]) and _close(r, alert["lc_features_r"])
        defined += not math.isnan(alert["lc_features_r"]["linear_fit_slope"])
    assert defined > 100  # most alerts have enough r points for a slope


# --------------------------------------------------------------------------- generator


def test_same_seed_same_bytes_other_seed_differs():
    first = list(AlertGenerator(seed=11).messages(150))
    again = list(AlertGenerator(seed=11).messages(150))
    other = list(AlertGenerator(seed=12).messages(150))
    assert first == again
    assert [v for _, v in first] != [v for _, v in other]
    assert {k for k, _ in first} == {json.dumps(alert_schema()).encode()}


def test_alerts_decode_back_from_messages_unchanged():
    alerts = list(AlertGenerator(seed=5).alerts(300))
    messages = list(AlertGenerator(seed=5).messages(300))
    for alert, (key, value) in zip(alerts, messages, strict=True):
        assert same(decode_message(key, value), alert)
        assert fastavro_bytes(alert_schema(), alert) == value


def test_every_alert_validates_against_the_schema(stream):
    parsed = fastavro.parse_schema(alert_schema())
    for alert, _ in stream[:300]:
        assert validate(alert, parsed, raise_errors=True)


def test_alerts_look_like_the_vra_topic(stream):
    alerts = [a for a, _ in stream]
    candids = [a["candid"] for a in alerts]
    assert len(set(candids)) == len(candids)
    assert all(a["candidate"]["candid"] == a["candid"] for a in alerts)
    assert all(
        re.fullmatch(r"SIM\d{2}[a-z]{7}", a["objectId"]) for a in alerts
    )  # never a real ZTF name
    cands = [a["candidate"] for a in alerts]
    assert all(19.5 < c["magpsf"] <= c["diffmaglim"] for c in cands)
    assert {c["fid"] for c in cands} == {1, 2}
    assert {c["isdiffpos"] for c in cands} <= {"t", "f", "1", "0"}
    assert {"t", "f"} <= {c["isdiffpos"] for c in cands}
    jds = [c["jd"] for c in cands]
    assert all(b >= a for a, b in itertools.pairwise(jds))
    assert np.mean([c["drb"] > 0.5 for c in cands]) > 0.75
    assert all(a["cdsxmatch"] == "Unknown" and a["roid"] != 3 for a in alerts)
    sizes = [len(v) for _, v in AlertGenerator(seed=7).messages(50)]
    assert 30_000 < np.median(sizes) < 70_000
    limits = detections = 0
    for alert in alerts:
        jd = alert["candidate"]["jd"]
        for point in alert["prv_candidates"]:
            assert jd - 30 <= point["jd"] < jd
            if point["magpsf"] is None:
                limits += 1
                assert point["diffmaglim"] > 0 and point["candid"] is None
            else:
                detections += 1
                assert point["isdiffpos"] in ("t", "f", "1", "0")
    assert limits > 1000 and detections > 1000


def test_bogus_alerts_are_worse_than_real_ones(stream):
    drb, flips, detections = defaultdict(list), defaultdict(list), defaultdict(list)
    for alert, label in stream:
        points = [p for p in alert["prv_candidates"] if p["magpsf"] is not None]
        points.append(alert["candidate"])
        drb[label].append(alert["candidate"]["drb"])
        flips[label].append(len({p["isdiffpos"] in ("t", "1") for p in points}) == 2)
        detections[label].append(len(points))
    real = drb["varstar"] + drb["extragal"] + drb["agn"]
    assert np.median(drb["bogus"]) < 0.6 < np.median(real)
    assert np.mean([d > 0.5 for d in real]) > 0.9
    assert np.mean(flips["bogus"]) > np.mean(flips["extragal"]) + 0.3  # signs flip
    assert np.median(detections["bogus"]) < 0.5 * min(
        np.median(detections[label]) for label in ("varstar", "extragal", "agn")
    )


def test_cutouts_are_gzipped_fits_stamps(stream):
    from astropy.io import fits

    alert = stream[0][0]
    for name in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
        cutout = alert[name]
        assert str(alert["candid"]) in cutout["fileName"]
        assert 3_000 < len(cutout["stampData"]) < 25_000
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(gzip.decompress(cutout["stampData"]))) as hdus:
                data = hdus[0].data
        assert data.shape == (63, 63) and data.dtype == np.dtype(">f4")


def test_class_shares_follow_class_weights():
    weights = {"varstar": 0.5, "extragal": 0.1, "bogus": 0.4}
    generator = AlertGenerator(seed=3, class_weights=weights, n_objects=40)
    pairs = list(generator.labelled(1000))
    counts = Counter(label for _, label in pairs)
    assert set(counts) == set(weights)
    for label, weight in weights.items():
        assert abs(counts[label] / 1000 - weight) < 0.02
    first = Counter(label for _, label in pairs[:100])  # from the very start
    assert abs(first["varstar"] / 100 - 0.5) < 0.05
    assert all(generator.label_of(a["candid"]) == label for a, label in pairs)
    truth = generator.truth_table()
    assert truth["candid"].tolist() == [a["candid"] for a, _ in pairs]
    assert truth["label"].tolist() == [label for _, label in pairs]


def test_objects_recur_with_a_growing_history(stream):
    by_object = defaultdict(list)
    for alert, label in stream:
        by_object[alert["objectId"]].append((alert, label))
    recurring = {o: v for o, v in by_object.items() if len(v) >= 3}
    assert len(recurring) >= 20
    grew = 0
    for series in recurring.values():
        assert len({label for _, label in series}) == 1
        for (earlier, _), (later, _) in itertools.pairwise(series):
            gap = later["candidate"]["jd"] - earlier["candidate"]["jd"]
            assert gap >= 0
            history = {p["candid"] for p in later["prv_candidates"]}
            if 0 < gap < 30:
                assert earlier["candid"] in history  # the earlier alert is now history
            grew += len(later["prv_candidates"]) > len(earlier["prv_candidates"])
    assert grew > 0.5 * sum(len(v) - 1 for v in recurring.values())


def test_galactic_sources_crowd_the_plane(stream):
    from astropy.coordinates import SkyCoord

    ra = defaultdict(list)
    dec = defaultdict(list)
    for alert, label in stream:
        ra[label].append(alert["candidate"]["ra"])
        dec[label].append(alert["candidate"]["dec"])

    def median_abs_b(label):
        b = SkyCoord(ra=ra[label], dec=dec[label], unit="deg").galactic.b.deg
        return np.median(np.abs(b))

    assert median_abs_b("varstar") < 0.5 * median_abs_b("extragal")
    assert median_abs_b("varstar") < 0.5 * median_abs_b("agn")
    assert min(min(d) for d in dec.values()) > -31


def test_knobs_move_the_cuts():
    loose = [a["candidate"] for a in AlertGenerator(seed=2, min_magpsf=None).alerts(400)]
    assert any(c["magpsf"] < 19.5 for c in loose)
    strict = [a["candidate"] for a in AlertGenerator(seed=2, min_drb=0.5).alerts(400)]
    assert all(c["drb"] > 0.5 for c in strict)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown classes"):
        AlertGenerator(class_weights={"galaxy": 1.0})
    with pytest.raises(ValueError):
        AlertGenerator(class_weights={"varstar": 0.0})
    generator = AlertGenerator(seed=1)
    with pytest.raises(KeyError):
        generator.label_of(42)
    with pytest.raises(RuntimeError):
        AlertGenerator(keep_truth=False).label_of(42)


def test_written_files_load_with_fink_client_finkvra_and_pandas(tmp_path):
    from fink_client.avro_utils import AlertReader

    generator = AlertGenerator(seed=4)
    avro = generator.write_avro(tmp_path / "a.avro", 40)
    gz = generator.write_avro(tmp_path / "b.avro.gz", 30)
    parquet = generator.write_parquet(tmp_path / "c.parquet", 30)
    candids = generator.truth_table()["candid"].tolist()

    from_client = AlertReader(str(avro)).to_list()
    assert [a["candid"] for a in from_client] == candids[:40]
    assert [a["candid"] for a in AlertReader(str(gz)).to_list()] == candids[40:70]
    frame = read_alerts([avro, gz, parquet])
    assert sorted(frame["candid"].tolist()) == sorted(candids)
    table = pd.read_parquet(parquet)
    assert table["candid"].tolist() == candids[70:]
    assert set(LC_FEATURE_NAMES) <= set(table["lc_features_r"].iloc[0])
    assert len(table["prv_candidates"].iloc[0]) > 0


def test_classes_are_separable_but_not_by_one_feature():
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    from finkvra.dust import GdpycProvider
    from finkvra.features import make_features

    pairs = list(AlertGenerator(seed=21).labelled(2000))
    labels = np.array([label for _, label in pairs])
    X, meta = make_features([a for a, _ in pairs], dust=GdpycProvider())
    keep = np.isin(labels, ["varstar", "extragal", "agn"])
    X, y = X[keep], (labels[keep] == "varstar").astype(int)
    objects = meta["objectId"].to_numpy()[keep]

    # Test on whole objects never seen in training (alerts of one object are alike).
    unique = np.unique(objects)
    held_out = set(np.random.default_rng(0).choice(unique, len(unique) // 3, replace=False))
    test = np.array([o in held_out for o in objects])
    model = HistGradientBoostingClassifier(min_samples_leaf=5, random_state=0)
    model.fit(X[~test], y[~test])
    model_auc = roc_auc_score(y[test], model.predict_proba(X[test])[:, 1])

    single = {}
    for column in X.columns:
        values = X[column].to_numpy()
        ok = np.isfinite(values)
        auc = roc_auc_score(y[ok], values[ok])
        single[column] = max(auc, 1 - auc)
    best = max(single, key=single.get)
    print(f"gal model AUC {model_auc:.3f}; best single feature {best} AUC {single[best]:.3f}")
    assert model_auc > 0.85
    assert single[best] < 0.9
    assert single[best] < model_auc - 0.05
    assert set(CLASSES) == set(labels)
