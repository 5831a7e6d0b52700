"""Tables of `finkvra.experiments.data`: feature and label files to pool and test sets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finkvra.experiments import (
    labelled_data,
    load_table,
    split_pool_test,
)
from tests.helpers import GAL


def test_labelled_data_matches_ids_converts_columns_and_drops_unmapped(tmp_path):
    features = pd.DataFrame(
        {
            "id": [1, 2, 3, 4, 5],
            "objectId": ["ZTFa", "ZTFb", "ZTFc", "ZTFd", "ZTFe"],
            "mag": [18.0, 19.0, np.nan, 20.0, 21.0],
            "n": [1, 2, 3, 4, 5],
            "flag": [True, False, True, True, False],
        }
    )
    features.to_parquet(tmp_path / "X.parquet", index=False)
    pd.DataFrame(
        {"id": ["2", "3", "4", "5", "9"], "label": ["good", "bad", "junk", "good", "bad"]}
    ).to_csv(tmp_path / "y.csv", index=False)
    X, y, report = labelled_data(
        load_table(tmp_path / "X.parquet"), load_table(tmp_path / "y.csv"), "good=1,bad=0"
    )
    assert X.index.tolist() == [2, 3, 5]
    assert y.tolist() == [1, 0, 1] and y.index.equals(X.index)
    assert list(X.columns) == ["mag", "n", "flag"]
    assert (X.dtypes == "float64").all()
    assert X["flag"].tolist() == [0.0, 1.0, 0.0]
    assert report.n_features_only == 1 and report.n_labels_only == 1
    assert report.unmapped == {"junk": 1} and report.dropped_columns == ("objectId",)
    assert report.class_counts == {0: 1, 1: 2}

    with pytest.raises(ValueError, match="no label column 'kind'"):
        labelled_data(
            load_table(tmp_path / "X.parquet"), load_table(tmp_path / "y.csv"), "gal", "kind"
        )
    pd.DataFrame({"id": [1, 1], "label": ["a", "b"]}).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(ValueError, match="duplicate id"):
        load_table(tmp_path / "dup.csv")


def test_group_split_keeps_objects_together(alerts_table):
    table = alerts_table[alerts_table["label"].isin(list(GAL))].iloc[:600]
    X = table.drop(columns=["objectId", "label"])
    y = table["label"].map(GAL)
    X_pool, _, X_test, _ = split_pool_test(X, y, 0.3, seed=1, groups=table["objectId"].to_numpy())
    pool_objects = set(table.loc[X_pool.index, "objectId"])
    test_objects = set(table.loc[X_test.index, "objectId"])
    assert not pool_objects & test_objects
    assert len(X_pool) + len(X_test) == 600 and len(X_test) >= 180
    _, y_pool, _, y_test = split_pool_test(X, y, 0.25, seed=1)
    for cls in (0, 1):
        assert (y_test == cls).sum() == round(0.25 * (y == cls).sum())
        assert (y_pool == cls).sum() == (y == cls).sum() - round(0.25 * (y == cls).sum())


def test_labelled_data_by_group_keys():
    features = pd.DataFrame(
        {"x": [1.0, 2.0, 3.0, 4.0]}, index=pd.Index([11, 12, 21, 31], name="candid")
    )
    objects = pd.Series(["a", "a", "b", "c"], index=features.index)
    labels = pd.DataFrame({"label": ["varstar", "agn", "bogus"]}, index=["a", "b", "z"])
    X, y, report = labelled_data(features, labels, "gal", label_keys=objects)
    assert X.index.tolist() == [11, 12, 21] and y.tolist() == [1, 1, 0]
    assert report.n_features_only == 1 and report.n_labels_only == 1  # c and z
    with pytest.raises(ValueError, match="features' index"):
        labelled_data(features, labels, "gal", label_keys=objects.reset_index(drop=True))
