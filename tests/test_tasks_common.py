"""Shared pieces of the task builders: rows, sampling, mixing, templates, item text, span corruption."""

import numpy as np
import pytest

from jaxrec.data.dataset import Dataset
from jaxrec.data.tasks import item_text
from jaxrec.data.tasks.example import Example
from jaxrec.data.tasks.mixing import mix_tasks
from jaxrec.data.tasks.rows import last_item_rows, sliding_rows
from jaxrec.data.tasks.sampling import sample_negatives, subsample, task_rng
from jaxrec.data.tasks.span_corruption import corrupt_spans
from jaxrec.data.tasks.templates import Template, usable
from jaxrec.errors import DataError


def test_sliding_rows_truncate_and_skip_first_position():
    rows = sliding_rows([np.array([5, 6, 7, 8]), np.array([9])], max_history=2)
    assert rows.users.tolist() == [0, 0, 0]
    assert [h.tolist() for h in rows.histories] == [[5], [5, 6], [6, 7]]
    assert rows.targets.tolist() == [6, 7, 8]
    assert len(sliding_rows([np.array([1, 2, 3])], 5, min_history=2)) == 1
    last = last_item_rows([np.array([1, 2, 3]), np.array([4])])
    assert last.users.tolist() == [0] and last.histories[0].tolist() == [1, 2] and last.targets.tolist() == [3]


@pytest.mark.parametrize("num_items,n_exclude,n", [(1000, 50, 99), (1000, 950, 20), (30, 10, 19), (10, 0, 10)])
def test_negatives_are_distinct_and_never_excluded(num_items, n_exclude, n):
    rng = np.random.default_rng(0)
    exclude = frozenset(rng.choice(num_items, n_exclude, replace=False).tolist())
    for _ in range(20):
        neg = sample_negatives(rng, num_items, exclude, n)
        assert len(neg) == n and len(set(neg.tolist())) == n
        assert not set(neg.tolist()) & exclude
        assert neg.min() >= 0 and neg.max() < num_items
    a = sample_negatives(np.random.default_rng(3), num_items, exclude, n)
    b = sample_negatives(np.random.default_rng(3), num_items, exclude, n)
    np.testing.assert_array_equal(a, b)


def test_negatives_error_when_catalog_too_small():
    with pytest.raises(DataError, match="cannot sample 5 negatives"):
        sample_negatives(np.random.default_rng(0), 6, {0, 1}, 5)


def test_subsample_and_task_rng():
    keep = subsample(np.random.default_rng(0), 100, 10)
    assert len(keep) == 10 and np.all(np.diff(keep) > 0)
    assert subsample(np.random.default_rng(0), 5, 1024).tolist() == [0, 1, 2, 3, 4]
    assert subsample(np.random.default_rng(0), 5, -1).tolist() == [0, 1, 2, 3, 4]
    assert task_rng(1, "a").integers(1 << 30) == task_rng(1, "a").integers(1 << 30)
    assert task_rng(1, "a").integers(1 << 30) != task_rng(1, "b").integers(1 << 30)


def test_mix_tasks_ratios():
    per_task = {t: [Example(t, f"{t}{i}", "r") for i in range(n)] for t, n in (("a", 10), ("b", 4), ("c", 0))}
    mixed = mix_tasks(per_task, {"a": 0.5, "b": 2.5, "zzz": 3.0}, np.random.default_rng(0))
    counts = {t: sum(e.task == t for e in mixed) for t in per_task}
    assert counts == {"a": 5, "b": 10, "c": 0}
    assert len({e.prompt for e in mixed if e.task == "b"}) == 4
    again = mix_tasks(per_task, {"a": 0.5, "b": 2.5}, np.random.default_rng(0))
    assert again == mixed


def test_templates_need_all_fields():
    ts = [Template("t {title}"), Template("d {description}", "{title}"), Template("x", "y")]
    assert usable(ts, {"title": "A", "description": "", "item": "I"}) == [0, 2]
    assert usable(ts, {"title": "A"}) == [2]  # the default response needs {item}
    assert ts[1].fields == {"description", "title"}
    assert ts[1].render({"description": "D", "title": "T"}) == ("d D", "T")


def _items(n):
    return [{"raw_id": str(i), "title": f" T{i} "} for i in range(n)]


def test_item_text_index_and_random_keys():
    ds = Dataset.from_sequences([[0, 1, 2]], _items(3))
    assert item_text.titles(ds) == ["T0", "T1", "T2"]
    assert item_text.index_strings({"0": ["<a_1>", "<b_2>"], 1: ["<a_1>", "<b_3>"], 2: ["<a_2>", "<b_0>"]}, 3) == [
        "<a_1><b_2>", "<a_1><b_3>", "<a_2><b_0>"]
    with pytest.raises(DataError, match="items 0 and 1 share"):
        item_text.index_strings({0: ["<a_1>"], 1: ["<a_1>"], 2: ["<a_2>"]}, 3)
    with pytest.raises(DataError, match="1 items have no index"):
        item_text.index_strings({0: ["<a_1>"], 1: ["<a_3>"]}, 3)
    keys = item_text.random_id_strings(500, seed=7)
    assert len(set(keys)) == 500 and {len(k) for k in keys} == {4}
    assert keys == item_text.random_id_strings(500, seed=7) != item_text.random_id_strings(500, seed=8)
    with pytest.raises(DataError, match="need an item index"):
        item_text.item_keys(ds, "semantic")


def test_span_corruption_reconstructs_text():
    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 40, 200):
        words = [f"w{i}" for i in range(n)]
        inp, tgt = corrupt_spans(words, rng)
        # put the masked spans back after their sentinels
        spans, current = {}, None
        for tok in tgt.split():
            if tok.startswith("<extra_id_"):
                current = tok
                spans[current] = []
            else:
                spans[current].append(tok)
        rebuilt = [w for tok in inp.split() for w in (spans[tok] if tok in spans else [tok])]
        assert rebuilt == words
        assert 1 <= sum(len(s) for s in spans.values()) < n
        assert all(spans.values())
    with pytest.raises(DataError):
        corrupt_spans(["one"], rng)
