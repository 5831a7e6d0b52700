"""The review page filters labelled items by labeller, label, date and model disagreement,
and its relabel posts a correction the trainer will see."""

from __future__ import annotations

import pytest

from service.queue.label_queue import LabelQueue, QueueItem
from service.web.review import disagreements

pytestmark = pytest.mark.timeout(300)


def test_a_confident_model_that_contradicts_the_label_is_a_disagreement():
    assert disagreements("extragal", {"gal": 0.95, "real": 0.99}) == ["gal"]  # gal says 1
    assert disagreements("gal", {"gal": 0.95, "real": 0.99}) == []
    assert disagreements("bogus", {"gal": 0.95, "real": 0.97}) == ["real"]  # gal excludes bogus
    assert disagreements("extragal", {"gal": 0.7}) == []  # not confident
    assert disagreements("agn", {"gal": None}) == []


def test_review_filters_match_the_labels_posted(
    tmp_path, redis_url, redis_client, queue_prefix, serve, page
):
    from service.config import Settings

    settings = Settings(
        data_dir=tmp_path / "data", redis_url=redis_url, queue_prefix=queue_prefix,
        fink_credentials="", http_port=0,
    )  # fmt: skip
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    # gal scores from 0.02 to 0.98; labels cycle; the queue-time scores travel with the label
    items = [
        QueueItem(
            candid=5_000 + i,
            objectId=f"ZTF25rev{i:04d}",
            priority=1.0 - i / 100,
            scores={"gal": 0.02 + 0.96 * i / 29, "real": 0.5},
        )  # fmt: skip
        for i in range(30)
    ]
    queue.push(items)
    labels = ["gal", "extragal", "varstar", "agn", "bogus", "real"]
    expected = []
    for i, item in enumerate(queue.lease("x", n=30)):
        who = ("ann", "bob", "cat")[i % 3]
        day = f"2025-06-{10 + i % 4:02d}T12:00:00+00:00"
        label = labels[i % 6]
        queue.submit_label(item.candid, label, who, objectId=item.objectId, timestamp=day)
        expected.append((item.candid, label, who, day[:10], item.scores["gal"]))

    server = serve(settings, queue, labeller="ann")

    def rows(query: str) -> set[int]:
        page.goto(f"{server.url}/review?{query}")
        return {
            int(c)
            for c in page.eval_on_selector_all(
                "#review tbody tr", "r => r.map(e => e.dataset.candid)"
            )
        }

    assert rows("") == {e[0] for e in expected}
    assert rows("labeller=bob") == {e[0] for e in expected if e[2] == "bob"}
    assert rows("label=agn") == {e[0] for e in expected if e[1] == "agn"}
    assert rows("since=2025-06-11&until=2025-06-12") == {
        e[0] for e in expected if "2025-06-11" <= e[3] <= "2025-06-12"
    }
    gal_class = {"gal": 1, "varstar": 1, "extragal": 0, "agn": 0}
    disagreeing = {
        e[0] for e in expected
        if e[1] in gal_class and abs(e[4] - 0.5) >= 0.4 and int(e[4] > 0.5) != gal_class[e[1]]
    }  # fmt: skip
    assert disagreeing  # the data has some
    assert rows("disagree=1") == disagreeing
    assert rows("labeller=ann&disagree=1") == {c for c in disagreeing if (c - 5_000) % 3 == 0}
    page.screenshot(path=str(tmp_path / "review-disagree.png"), full_page=True)

    # relabel the first disagreement as the model says: a correction by the page's labeller
    target = min(disagreeing)
    said = "gal" if next(e[4] for e in expected if e[0] == target) > 0.5 else "extragal"
    page.locator(f'tr[data-candid="{target}"] button[data-label="{said}"]').click()
    page.wait_for_selector(f'tr[data-candid="{target}"].corrected')
    last = redis_client.xrevrange(queue.key("labels"), count=1)[0][1]
    assert (int(last["candid"]), last["label"], last["kind"], last["labeller"]) == (
        target, said, "correction", "ann",
    )  # fmt: skip
    assert target not in rows("disagree=1")  # the human now agrees with the model
