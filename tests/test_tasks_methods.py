"""Method task builders produce exactly the documented samples (docs/TASKS.md), deterministically."""

import logging
from pathlib import Path

import numpy as np
import pytest

from jaxrec.data.dataset import Dataset
from jaxrec.data.splits import leave_one_out, temporal_split
from jaxrec.data.synthetic import make_preset
from jaxrec.data.tasks import (ITEM_PLACEHOLDER, AlignedT5TaskConfig, LCRecTaskConfig, Rows,
                               aligned_t5_eval_examples, aligned_t5_item_keys, aligned_t5_task_examples,
                               aligned_t5_train_examples, bigrec_examples, bigrec_train_examples,
                               lcrec_eval_all_templates, lcrec_eval_examples, lcrec_task_examples,
                               lcrec_train_examples, rsllm_candidate_examples, rsllm_eval_examples,
                               rsllm_train_examples)
from jaxrec.errors import ConfigError, DataError

ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n")
ALPACA = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"


@pytest.fixture(scope="module")
def movies() -> Dataset:
    """8 movies (item 7 has no title), 4 users with timestamps and ratings."""
    titles = ["Toy Story (1995)", "Heat (1995)", "Fargo (1996)", "Alien (1979)", "Up (2009)", "Casablanca (1942)",
              "Jaws (1975)", None]
    items = []
    for i, t in enumerate(titles):
        it = {"raw_id": f"m{i}", "categories": ["Movies", "Drama"], "attributes": ["classic"]}
        if t:
            it["title"] = t
            it["description"] = f"The film {t}."
        items.append(it)
    items[1].pop("description")
    seqs = [[0, 1, 2, 3, 4], [5, 6, 0], [1, 3], [2, 4, 6, 5, 7, 0, 1]]
    ts = [[10 * k + u for k in range(len(s))] for u, s in enumerate(seqs)]
    ratings = [[1 + (i + k) % 5 for k, i in enumerate(s)] for s in seqs]
    return Dataset.from_sequences(seqs, items, timestamps=ts, ratings=ratings, name="movies")


@pytest.fixture(scope="module")
def index(movies):
    return {i: [f"<a_{i % 3}>", f"<b_{i}>"] for i in range(movies.num_items)}


@pytest.fixture(scope="module")
def shop():
    ds = make_preset("tiny")
    return ds, leave_one_out(ds)


def _row(user, history, target):
    return Rows(np.array([user], np.int32), [np.array(history, np.int32)], np.array([target], np.int32))


# ------------------------------------------------------------------ BIGRec
def test_bigrec_exact_sample(movies):
    [ex] = bigrec_examples(movies, _row(0, [0, 1, 2], 3), domain="movies", max_history=2)
    assert ex.prompt == (
        ALPACA_INPUT + "### Instruction:\nLooking at the movies this user has watched so far, recommend one new movie "
        "the user is likely to enjoy.\n\n### Input:\nThe user has watched these movies, oldest first: "
        '"Heat (1995)", "Fargo (1996)"\n\n### Response:\n')
    assert ex.response == '"Alien (1979)"'
    assert (ex.task, ex.user, ex.target, ex.meta) == ("seqrec", 0, 3, {"history": [1, 2]})
    [games] = bigrec_examples(movies, _row(0, [0], 3), domain="games")
    assert "these games, oldest first" in games.prompt and "has played so far" in games.prompt
    with pytest.raises(DataError, match="domain"):
        bigrec_examples(movies, _row(0, [0], 3), domain="books")


def test_bigrec_train_sample_is_seeded(shop):
    ds, _ = shop
    split = temporal_split(ds, history=10)
    a = bigrec_train_examples(ds, split, "items", sample=50, seed=1)
    assert len(a) == 50 and a == bigrec_train_examples(ds, split, "items", sample=50, seed=1)
    assert a != bigrec_train_examples(ds, split, "items", sample=50, seed=2)
    assert max(len(e.meta["history"]) for e in a) <= 10
    assert len(bigrec_train_examples(ds, split, "items", sample=None)) == len(split.train)


# ------------------------------------------------------------------ LC-Rec
def test_lcrec_eval_exact_and_multi_template(movies, index):
    split = leave_one_out(movies)
    ex = lcrec_eval_examples(movies, split, index, "test", template=0, max_history=2)
    assert [e.user for e in ex] == [0, 1, 3]
    assert ex[0].prompt == (
        ALPACA + "### Instruction:\nHere are the items this user interacted with, in order: <a_2><b_2>, <a_0><b_3>. "
        "Which item is the user most likely to interact with next?\n\n### Response:\n")
    assert ex[0].response == "<a_1><b_4>" and ex[0].target == 4 and ex[0].meta == {"template": 0, "history": [2, 3]}
    per_template = lcrec_eval_all_templates(movies, split, index, "valid")
    assert len(per_template) == 5 and len({e[0].prompt for e in per_template}) == 5
    assert all(t[0].response == "<a_0><b_3>" for t in per_template)  # valid target of user 0
    with pytest.raises(DataError, match="template 9"):
        lcrec_eval_examples(movies, split, index, template=9)


def test_lcrec_tasks_skips_and_determinism(movies, index, caplog):
    split = leave_one_out(movies)
    with caplog.at_level(logging.WARNING, logger="jaxrec.data.tasks"):
        ex = lcrec_train_examples(movies, split, index, LCRecTaskConfig(max_history=2), seed=0)
    assert "preferenceobtain skipped" in caplog.text
    assert {e.task for e in ex} == {"seqrec", "item2index", "index2item", "fusionseqrec", "itemsearch"}
    assert ex == lcrec_train_examples(movies, split, index, LCRecTaskConfig(max_history=2), seed=0)
    assert ex != lcrec_train_examples(movies, split, index, LCRecTaskConfig(max_history=2), seed=1)
    # seqrec: one example per position of the training sequences; history cut to 2 indices
    seq = [e for e in ex if e.task == "seqrec"]
    assert len(seq) == sum(max(0, len(t) - 1) for t in split.train)
    assert all(e.prompt.count("<a_") == 2 for e in seq if e.prompt.count("<a_") != 1)
    # item tasks: the untitled item 7 has no title/description, so no item2index/index2item example
    assert sorted(e.target for e in ex if e.task == "item2index") == list(range(7))
    i2i = {e.target: e for e in ex if e.task == "index2item"}
    assert "Heat (1995)" in i2i[1].response and "Description" not in i2i[1].response
    search = [e for e in ex if e.task == "itemsearch"]
    assert search and all("Drama with classic" in e.prompt for e in search)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jaxrec.data.tasks"):
        none = lcrec_task_examples("itemsearch", movies, split, index, LCRecTaskConfig(itemsearch_query="skip"))
    assert none == [] and "itemsearch skipped" in caplog.text
    prefs = lcrec_task_examples("preferenceobtain", movies, split, index, preferences={0: "Likes 90s films."})
    assert len(prefs) == 1 and prefs[0].response == "Likes 90s films." and prefs[0].user == 0


def test_lcrec_history_prompts_shorten_to_fit_a_row(movies, index):
    """With ``fits``, an example too long for a row shows the longest suffix of its history that fits (at
    least one item); examples that fit are unchanged."""
    split = leave_one_out(movies)
    cfg = LCRecTaskConfig(tasks=("seqrec", "fusionseqrec"), max_history=5)
    full = lcrec_train_examples(movies, split, index, cfg, seed=0)
    budget = sorted(len(e.prompt) + len(e.response) for e in full)[len(full) // 2]  # half the examples too long
    fits = lambda prompt, response: len(prompt) + len(response) <= budget  # noqa: E731
    fitted = lcrec_train_examples(movies, split, index, cfg, seed=0, fits=fits)
    assert len(fitted) == len(full)
    shortened = 0
    for before, after in zip(full, fitted):
        assert (before.task, before.user, before.target, before.response) == (after.task, after.user, after.target,
                                                                               after.response)
        if fits(before.prompt, before.response) or "history_shown" not in after.meta:
            assert after == before  # it fits, or its history is one item already
            continue
        shortened += 1
        m = after.meta["history_shown"]
        assert m >= 1 and (m == 1 or fits(after.prompt, after.response)) and len(after.prompt) < len(before.prompt)
        assert after.prompt.count("<a_") == m or after.prompt.count('"') // 2 == m  # m items shown
        assert after.meta["template"] == before.meta["template"]
    assert shortened > 0


def test_lcrec_ratios_and_bad_config(movies, index):
    split = leave_one_out(movies)
    cfg = LCRecTaskConfig(tasks=("seqrec", "index2item"), ratios={"index2item": 0.5})
    ex = lcrec_train_examples(movies, split, index, cfg)
    assert sum(e.task == "index2item" for e in ex) == 4 and {e.task for e in ex} == {"seqrec", "index2item"}
    with pytest.raises(ConfigError, match="unknown LC-Rec tasks"):
        lcrec_train_examples(movies, split, index, LCRecTaskConfig(tasks=("seqrec", "nope")))


# ------------------------------------------------------------------ Aligned FLAN-T5
def test_aligned_t5_eval_exact_samples(movies):
    split = leave_one_out(movies)
    keys = [f"{100 + i}" for i in range(movies.num_items)]
    cfg = AlignedT5TaskConfig(max_history=2)
    [ret, *_] = aligned_t5_eval_examples("retrieval", movies, split, keys, "test", cfg)
    assert ret.prompt == ("A user interacted with these items, oldest first: 102: Fargo (1996); 103: Alien (1979). "
                          "Which item will the user interact with next?")
    assert (ret.response, ret.target) == ("104", 4)
    [rat, *_] = aligned_t5_eval_examples("rating", movies, split, keys, "test", cfg)
    assert rat.prompt == ("A user gave these ratings (1 to 5 stars): 102: Fargo (1996) (5 stars); "
                          "103: Alien (1979) (2 stars). How many stars will the user give 104: Up (2009)? "
                          "Answer with a number from 1 to 5.")
    assert rat.response == "4" and rat.meta["rating"] == 4.0


def test_aligned_t5_train_tasks(shop, caplog):
    ds, split = shop
    cfg = AlignedT5TaskConfig(max_history=5)
    keys = aligned_t5_item_keys(ds, cfg, seed=0)
    ex = aligned_t5_train_examples(ds, split, keys, cfg, seed=0)
    assert {e.task for e in ex} == set(cfg.tasks)
    assert ex == aligned_t5_train_examples(ds, split, keys, cfg, seed=0)
    by = {t: [e for e in ex if e.task == t] for t in cfg.tasks}
    for e in by["bpr"]:
        pos, neg = e.meta["positive"], e.meta["negative"]
        assert e.response == keys[pos] and neg not in split.train[e.user].tolist()
        assert f"{keys[pos]}: " in e.prompt and f"{keys[neg]}: " in e.prompt
    first_is_positive = [e.prompt.index(keys[e.meta["positive"]] + ":") > e.prompt.index(keys[e.meta["negative"]] + ":")
                         for e in by["bpr"]]
    assert 0.3 < np.mean(first_is_positive) < 0.7  # order randomised
    for e in by["ranking"]:
        cands = e.meta["candidates"]
        assert len(cands) == 5 and e.target in cands
        assert not (set(cands) - {e.target}) & set(split.train[e.user].tolist())
    for e in by["mim"]:
        masked = e.meta["masked_items"]
        assert 1 <= len(masked) < len(e.meta["items"]) <= 5
        assert e.response == " ".join(f"<extra_id_{k}> {keys[i]}" for k, i in enumerate(masked))
        assert e.prompt.count("<extra_id_") == len(masked)
    assert len(by["mlm"]) == ds.num_items and all(e.response.startswith("<extra_id_0> ") for e in by["mlm"])
    assert all(e.response in {"1", "2", "3", "4", "5"} for e in by["rating"])
    ranking = aligned_t5_eval_examples("ranking", ds, split, keys, "test", cfg, seed=0)
    for e in ranking:
        cands = e.meta["candidates"]
        assert len(cands) == 100 and len(set(cands)) == 100 and e.target in cands
        assert not (set(cands) - {e.target}) & set(ds.sequence(e.user).tolist())
        assert e.meta["protocol"].startswith("sampled") and e.response == keys[e.target]
        assert e.prompt.count("; ") >= 99
    assert ranking == aligned_t5_eval_examples("ranking", ds, split, keys, "test", cfg, seed=0)
    no_ratings = Dataset(items=ds.items, user_raw_ids=ds.user_raw_ids, offsets=ds.offsets, item_ids=ds.item_ids)
    with caplog.at_level(logging.WARNING, logger="jaxrec.data.tasks"):
        assert aligned_t5_task_examples("rating", no_ratings, split, keys, cfg) == []
    assert "rating skipped" in caplog.text


# ------------------------------------------------------------------ RSLLM
def test_rsllm_exact_sample_and_stages(movies):
    split = leave_one_out(movies)
    [ex, *_] = rsllm_eval_examples(movies, split, "test", stage=2, domain="movies", max_history=2)
    assert ex.prompt == (
        ALPACA_INPUT + "### Instruction:\nGiven the movies a user has watched, in order, name the movie the user "
        "will choose next.\n\n### Input:\nHistory: "
        f'"Fargo (1996)" {ITEM_PLACEHOLDER}, "Alien (1979)" {ITEM_PLACEHOLDER}\n\n### Response:\n')
    assert ex.response == "Up (2009)" and ex.meta["placeholder_items"] == [2, 3]
    train2 = rsllm_train_examples(movies, split, stage=2, max_history=3)
    train1 = rsllm_train_examples(movies, split, stage=1, max_history=3)
    for e2, e1 in zip(train2, train1):
        assert e2.prompt.count(ITEM_PLACEHOLDER) == len(e2.meta["placeholder_items"]) == len(e2.meta["history"]) <= 3
        assert ITEM_PLACEHOLDER not in e1.prompt and e1.prompt == e2.prompt.replace(f" {ITEM_PLACEHOLDER}", "")


def test_rsllm_candidates(shop):
    ds, split = shop
    ex = rsllm_eval_examples(ds, split, "test", stage=2, domain="items", candidates=20, seed=3)
    assert ex == rsllm_eval_examples(ds, split, "test", stage=2, domain="items", candidates=20, seed=3)
    for e in ex:
        cands = e.meta["candidates"]
        assert len(set(cands)) == 20 and e.target in cands
        assert not (set(cands) - {e.target}) & set(ds.sequence(e.user).tolist())
        assert e.prompt.count(ITEM_PLACEHOLDER) == len(e.meta["history"]) + 20 == len(e.meta["placeholder_items"])
        assert e.meta["protocol"].startswith("sampled")
    rows = Rows(split.test_users[:3], split.test_history[:3], split.test_target[:3])
    text_only = rsllm_candidate_examples(ds, rows, "items", max_history=10, num_candidates=20, seed=3,
                                         with_placeholders=False)
    assert all(ITEM_PLACEHOLDER not in e.prompt and e.meta["placeholder_items"] == [] for e in text_only)


# ------------------------------------------------------------------ docs/TASKS.md stays true
DOCS = Path(__file__).resolve().parents[1] / "docs" / "TASKS.md"


def _doc_block(title, ex):
    newline = "" if ex.prompt.endswith("\n") else "\n"
    return (f"#### {title}\n\n```text\n{ex.prompt}{newline}```\nresponse: `{ex.response!r}`  \n"
            f"task={ex.task!r} user={ex.user} target={ex.target} meta={ex.meta}\n")


def test_docs_show_exactly_what_the_builders_render(movies, index):
    split = leave_one_out(movies)
    blocks = [("BIGRec (movies)", bigrec_examples(movies, _row(0, [0, 1, 2], 3), "movies")[0]),
              ("LC-Rec seqrec evaluation (template 0)", lcrec_eval_examples(movies, split, index, "test", 0)[0])]
    lc = lcrec_train_examples(movies, split, index, LCRecTaskConfig(), seed=0,
                              preferences={0: "Enjoys 1990s crime films."})
    blocks += [(f"LC-Rec {t}", next(e for e in lc if e.task == t)) for t in LCRecTaskConfig().tasks]
    keys = [str(100 + i) for i in range(movies.num_items)]
    cfg = AlignedT5TaskConfig(max_history=3, eval_negatives=1, train_negatives=2)
    blocks += [(f"Aligned T5 {t}", next(e for e in aligned_t5_task_examples(t, movies, split, keys, cfg, seed=0)
                                        if e.user in (-1, 0))) for t in cfg.tasks]
    blocks += [("Aligned T5 ranking evaluation (eval_negatives=1 here; 99 by default)",
                aligned_t5_eval_examples("ranking", movies, split, keys, "test", cfg)[0]),
               ("RSLLM stage 2", rsllm_eval_examples(movies, split, "test", 2, "movies", 3)[0]),
               ("RSLLM stage 1", rsllm_eval_examples(movies, split, "test", 1, "movies", 3)[0]),
               ("RSLLM LLaRA candidates (num_candidates=3 here; 20 by default)",
                rsllm_candidate_examples(movies, _row(0, [0, 1, 2, 3], 4), "movies", 3, num_candidates=3, seed=0)[0])]
    doc = DOCS.read_text()
    for title, ex in blocks:
        assert _doc_block(title, ex) in doc, f"docs/TASKS.md is out of date for '{title}'"
