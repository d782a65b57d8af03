"""course_lib.llm.tuning on small inputs: TALLRec examples (window, label, no future in the prompt,
short users), P5's item indexings and the "last ID + 1" leak, the LoRA trainer (answer-only loss,
gradient accumulation, adapters removed cleanly), AUC intervals, the priors and the sequential
baselines on shots. A tiny random Llama with a character tokenizer stands in for SmolLM2."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from course_lib.llm import scoring as S
from course_lib.llm import tuning as T

from llm_fakes import CharTok, tiny_lm as make_tiny_lm

pytestmark = pytest.mark.unit


def ratings_frame(n_users=6, n_items=40, per_user=14, seed=0, shuffle=True):
    """Random ratings with distinct timestamps per user, rows shuffled (the builders must sort)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        items = rng.choice(np.arange(1, n_items + 1), per_user, replace=False)
        times = np.sort(rng.choice(np.arange(10_000), per_user, replace=False))
        rows += [(u, int(i), float(rng.integers(1, 6)), int(t)) for i, t in zip(items, times)]
    df = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True) if shuffle else df


# ----------------------------------------------------------------------------- users and TALLRec data

def test_split_users_is_a_seeded_partition():
    parts = T.split_users(np.repeat(np.arange(100), 3), valid=0.1, test=0.3, seed=1)
    assert [len(parts[s]) for s in T.STAGES] == [60, 10, 30]
    assert set(np.concatenate(list(parts.values()))) == set(range(100))
    assert not set(parts["train"]) & set(parts["test"]) and not set(parts["valid"]) & set(parts["test"])
    again = T.split_users(np.arange(100), seed=1)
    assert all(np.array_equal(parts[s], again[s]) for s in T.STAGES)
    with pytest.raises(ValueError, match="shares"):
        T.split_users(np.arange(10), valid=0.5, test=0.6)


def test_tallrec_example_window_label_and_position():
    items = list(range(100, 112))                       # 12 ratings
    ratings = [5, 1, 4, 3, 2, 5, 4, 4, 1, 3, 2, 4]
    hist, liked, cand, label = T.tallrec_example(items, ratings)
    assert hist == items[1:11] and cand == 111 and label == 1
    assert liked == [r > 3 for r in ratings[1:11]]
    hist, liked, cand, label = T.tallrec_example(items, ratings, position=10)
    assert hist == items[:10] and cand == 110 and label == 0, "rating 2 is not a like"
    assert T.tallrec_example(items, [4] * 11 + [3])[3] == 0, "like means rating > 3: a 3 is not a like"
    assert T.tallrec_example(items, ratings, window=3)[0] == items[8:11]


def test_tallrec_example_rejects_short_users_and_bad_positions():
    with pytest.raises(ValueError, match="has 10 ratings.*window \\+ 1 = 11"):
        T.tallrec_example(list(range(10)), [4] * 10)
    with pytest.raises(ValueError, match="position"):
        T.tallrec_example(list(range(12)), [4] * 12, position=5)
    with pytest.raises(ValueError, match="ratings"):
        T.tallrec_example([1, 2], [4])


@pytest.mark.parametrize("position", ["last", "random"])
def test_build_tallrec_never_puts_the_future_in_the_window(position):
    df = ratings_frame()
    data = T.build_tallrec(df, position=position, seed=3)
    assert len(data) == 6 and not data.skipped
    for _, ex in data.examples.iterrows():
        g = df[df.user == ex.user].sort_values("timestamp")
        pos = g.item.tolist().index(ex["item"])
        assert ex.history == g.item.tolist()[pos - 10: pos], "the 10 ratings just before the candidate"
        assert ex.history_ratings == g.rating.tolist()[pos - 10: pos]
        assert g.timestamp.iloc[pos - 10: pos].max() <= ex.candidate_time == g.timestamp.iloc[pos]
        assert ex.window_end < ex.candidate_time, "the window ends before the candidate"
        assert ex.label == int(g.rating.iloc[pos] > 3)
        if position == "last":
            assert pos == len(g) - 1


def test_build_tallrec_skips_and_counts_short_users():
    df = ratings_frame(n_users=4)
    short = df[df.user == 2].sort_values("timestamp").iloc[:7]
    df = pd.concat([df[df.user != 2], short])
    data = T.build_tallrec(df)
    assert data.skipped == [2] and sorted(data.examples.user) == [1, 3, 4]
    assert "1 users skipped" in repr(data)
    assert len(T.build_tallrec(df, users=[1, 2])) == 1
    with pytest.raises(ValueError, match="timestamp"):
        T.build_tallrec(df.drop(columns="timestamp"))
    shots = T.build_tallrec(ratings_frame(n_users=10)).sample(4, seed=1)
    assert len(shots) == 4 and shots.examples.user.is_unique


def test_tallrec_prompt_lists_liked_and_disliked_titles():
    p = T.tallrec_prompt(["Usual Suspects, The", "Heat"], [], "Fargo")
    assert 'User liked: "The Usual Suspects", "Heat"\nUser disliked: none\n' in p
    assert p.endswith('Will the user like the target movie "Fargo"?') and '"Yes" or "No"' in p
    df = ratings_frame(n_users=1)
    data = T.build_tallrec(df)
    titles = {i: f"Film {i}" for i in df.item}
    lm = type("FakeLM", (), {"chat": lambda self, text: f"<u>{text}<a>"})()
    (prompt,) = T.tallrec_prompts(lm, data, titles)
    ex = data.examples.iloc[0]
    for i, r in zip(ex.history, ex.history_ratings):
        line = "User liked:" if r > 3 else "User disliked:"
        assert f'"Film {i}"' in prompt.split(line)[1].split("\n")[0]
    assert T.tallrec_answers(data) == ["Yes" if ex.label else "No"]


# ----------------------------------------------------------------------------- P5 item IDs

def disjoint_users(n_users=5, per_user=8):
    """Each user watches their own items: sequential IDs then number each history consecutively."""
    rows = [(u, 100 * u + j, 4.0, 1000 * u + j) for u in range(1, n_users + 1) for j in range(per_user)]
    return pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]).sample(frac=1.0, random_state=0)


def test_sequential_ids_number_items_user_by_user_in_time_order():
    df = pd.DataFrame({"user": [2, 1, 1, 2, 1], "item": [7, 9, 5, 5, 3], "rating": 4.0, "timestamp": [1, 3, 1, 0, 2]})
    ids = T.sequential_ids(df)
    assert ids.to_dict() == {5: 1, 3: 2, 9: 3, 7: 4}, "user 1: 5, 3, 9 in time order; then user 2's new item 7"
    rnd = T.random_ids([3, 5, 7, 9, 9], seed=0)
    assert sorted(rnd.tolist()) == [1, 2, 3, 4] and sorted(rnd.index) == [3, 5, 7, 9]
    many = [T.random_ids(np.arange(1, 51), seed=k).tolist() for k in range(3)]
    assert many[0] != many[1] != many[2], "the seed draws the permutation"


def test_last_plus_one_rule_finds_the_next_item_only_under_sequential_ids():
    df = disjoint_users(n_users=30)
    cases = T.next_item_candidates(df, df.user.unique(), n_negatives=19, max_items=5, seed=0)
    assert len(cases) == 30
    for _, c in cases.iterrows():
        assert c.target in c.candidates and len(set(c.candidates)) == 20
        assert not set(c.candidates) - {c.target} & set(df[df.user == c.user].item), "negatives are unrated"
        assert len(c.history) == 5
    hr = {}
    for name, ids in (("sequential", T.sequential_ids(df)), ("random", T.random_ids(df.item, seed=0))):
        scores = [T.last_plus_one_scores(ids.loc[h].to_numpy(), ids.loc[c].to_numpy())
                  for h, c in zip(cases.history, cases.candidates)]
        hr[name] = T.hit_rate(scores, cases.candidates, cases.target, k=1).mean()
    assert hr["sequential"] == 1.0, "every next item is the last ID + 1"
    assert hr["random"] < 0.3
    with pytest.raises(ValueError, match="empty"):
        T.last_plus_one_scores([], [1, 2])


def test_p5_examples_cover_three_tasks_without_the_target_in_the_history():
    df = disjoint_users(n_users=3)
    ids = T.sequential_ids(df)
    rows = T.p5_examples(df, [1, 2, 3], ids, max_items=4, seed=0)
    assert rows.groupby("user").task.apply(list).tolist() == [["next", "rating", "like"]] * 3
    nxt = rows[(rows.user == 2) & (rows.task == "next")].iloc[0]
    assert nxt.answer == str(ids.loc[207]) and "items 12, 13, 14, 15." in nxt.prompt
    assert str(ids.loc[207]) not in nxt.prompt.split("Predict")[0].replace("User 2", "")
    assert set(rows[rows.task == "rating"].answer) == {"4"} and set(rows[rows.task == "like"].answer) == {"Yes"}
    assert T.p5_prompt("like", 9, [1, 2], 5) == ('User 9 has watched items 1, 2. Will the user like item 5? '
                                                 'Answer "Yes" or "No".')
    with pytest.raises(ValueError, match="needs an item"):
        T.p5_prompt("rating", 1, [1])
    with pytest.raises(ValueError, match="task"):
        T.p5_prompt("explain", 1, [1])


def test_hit_rate_counts_the_top_k_and_breaks_ties_at_random():
    assert T.hit_rate([[0.1, 0.9, 0.5]], [[7, 8, 9]], [9], k=2).tolist() == [1.0]
    assert T.hit_rate([[0.1, 0.9, 0.5]], [[7, 8, 9]], [7], k=2).tolist() == [0.0]
    tied = T.hit_rate([[1.0] * 10] * 2000, [list(range(10))] * 2000, [3] * 2000, k=1, seed=0).mean()
    assert 0.07 < tied < 0.13, "a constant score is a random ranking"


# ----------------------------------------------------------------------------- LoRA training

class YesNoTok(CharTok):
    """The character tokenizer with "Yes" and "No" as single tokens (as in SmolLM2's vocabulary)."""
    WORDS = {"Yes": 120, "No": 121}

    def encode(self, text, add_special_tokens=False):
        return [self.WORDS[text]] if text in self.WORDS else super().encode(text)


@pytest.fixture()
def tiny():
    lm = make_tiny_lm()
    lm.tokenizer = YesNoTok()
    return lm


def test_answer_batch_left_pads_and_right_aligns_the_targets():
    tok = CharTok()
    ids, mask, tgt, width = T.answer_batch(tok, ["ab", "abcd"], ["x", "yz"])
    assert ids.shape == (2, 6) and width == 2
    assert ids[0].tolist() == [0, 0, 0] + tok.encode("abx") and mask[0].tolist() == [0, 0, 0, 1, 1, 1]
    assert tgt.tolist() == [[-100] + tok.encode("x"), tok.encode("yz")]
    ids, _, _, _ = T.answer_batch(tok, ["abcdefgh"], ["x"], max_length=4)
    assert ids[0].tolist() == tok.encode("fghx"), "a long prompt loses its oldest tokens"


def test_answer_loss_is_the_cross_entropy_of_the_answer_tokens_only(tiny):
    ids, mask, tgt, width = T.answer_batch(tiny.tokenizer, ["hello", "hi there"], ["Yes", "No"])
    loss = T.answer_loss(tiny.model, ids, mask, tgt, width)
    logits = tiny.model(input_ids=ids, attention_mask=mask).logits
    expected = torch.nn.functional.cross_entropy(logits[:, -2], ids[:, -1])
    assert torch.allclose(loss, expected, atol=1e-5)


def test_lora_counts_trains_and_unloads_to_the_exact_base_model(tiny):
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    s = T.LoraSettings(r=2, alpha=4, dropout=0.0, lr=5e-2, epochs=30, micro_batch=2, accumulation=1)
    peft = T.add_lora(tiny.model, s)
    trainable, total = T.trainable_parameters(peft)
    assert trainable == 2 * (16 + 16) * 2, "r x (d_in + d_out) per adapted matrix, q and v, one layer"
    assert total == sum(v.numel() for v in before.values()) + trainable
    with pytest.raises(ValueError, match="already"):
        T.add_lora(peft)
    prompts, answers = ["aaaa", "bbbb", "abab", "baba"], ["Yes", "No", "Yes", "No"]
    res = T.train_lora(peft, tiny.tokenizer, prompts, answers, s, progress=False)
    assert res.steps == 30 * 2 and res.peak_rss_mb > 0
    # a random tiny Llama's logits are small (frozen head), so the loss moves little, but it moves
    assert np.mean(res.losses[-3:]) < np.mean(res.losses[:3]) - 0.1, "the loss falls on a learnable task"
    p = T.yes_probability(type(tiny)(peft.get_base_model(), tiny.tokenizer, tiny.device, "t"), prompts)
    assert p[[0, 2]].min() > 0.5 > p[[1, 3]].max(), "P(Yes) separates the Yes prompts from the No prompts"
    base = T.remove_lora(peft)
    assert base is tiny.model and not hasattr(base, "peft_config")
    after = base.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)


def test_gradient_accumulation_matches_one_big_batch(tiny):
    prompts, answers = ["abcd", "bcda", "cdab", "dabc"], ["Yes", "No", "No", "Yes"]  # one length: no padding
    grads = []
    for mb, acc in ((4, 1), (1, 4)):
        s = T.LoraSettings(r=2, dropout=0.0, lr=1e-2, epochs=1, micro_batch=mb, accumulation=acc, seed=0)
        peft = T.add_lora(tiny.model, s)
        T.train_lora(peft, tiny.tokenizer, prompts, answers, s, progress=False)
        grads.append({k: v.detach().clone() for k, v in peft.named_parameters() if v.requires_grad})
        T.remove_lora(peft)
    assert all(torch.allclose(grads[0][k], grads[1][k], atol=1e-6) for k in grads[0])


def test_train_lora_refuses_a_model_without_adapters_and_mismatched_data(tiny):
    with pytest.raises(ValueError, match="add_lora"):
        for p in tiny.model.parameters():
            p.requires_grad_(False)
        T.train_lora(tiny.model, tiny.tokenizer, ["a"], ["Yes"], progress=False)
    with pytest.raises(ValueError, match="as many answers"):
        T.train_lora(tiny.model, tiny.tokenizer, ["a", "b"], ["Yes"], progress=False)
    with pytest.raises(ValueError):
        T.LoraSettings(r=0)


def test_tallrec_fits_on_validation_epochs_scores_and_unloads(tiny):
    df = ratings_frame(n_users=12, n_items=30)
    titles = {i: f"F{i}" for i in range(1, 31)}
    data = T.build_tallrec(df)
    shots, valid = data.sample(6, seed=0), data.sample(6, seed=1)
    tiny.chat = lambda text, system=None: f"<u>{text[-40:]}<a>"
    model = T.TallRec(tiny, titles, T.LoraSettings(r=2, epochs=3, micro_batch=2, accumulation=1, dropout=0.0),
                      batch_size=4)
    zero = model.score(valid)
    base_weights = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    model.fit(shots, valid=valid, progress=False)
    assert len(model.valid_auc_) == 3 and 1 <= model.best_epoch_ <= 3
    assert model.valid_auc_[model.best_epoch_ - 1] == max(model.valid_auc_)
    tuned = model.score(valid)
    assert tuned.shape == (6,) and ((tuned > 0) & (tuned < 1)).all() and not np.allclose(tuned, zero)
    model.unload()
    assert np.allclose(model.score(valid), zero, atol=1e-6), "unload restores the zero-shot model"
    assert all(torch.equal(base_weights[k], v) for k, v in tiny.model.state_dict().items())


# ----------------------------------------------------------------------------- AUC and baselines

def test_auc_intervals_agree_with_the_course_auc():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = y * 0.5 + rng.normal(size=300).round(1)          # rounded: many ties
    assert abs(T._auc_fast(y.astype(bool), s) - S.auc(y, s)) < 1e-12
    m, lo, hi = T.auc_ci(y, s, n_boot=300)
    assert m == S.auc(y, s) and lo < m < hi and hi - lo < 0.2
    d, dlo, dhi = T.auc_diff_ci(y, s, -s, n_boot=300)
    assert abs(d - (2 * m - 1)) < 1e-12 and dlo > 0
    d0 = T.auc_diff_ci(y, s, s, n_boot=100)
    assert d0 == (0.0, 0.0, 0.0)


def test_priors_use_training_ratings_and_the_window_only():
    train = pd.DataFrame({"item": [1, 1, 2, 2], "rating": [5.0, 5.0, 1.0, 1.0]})
    p = T.Priors.fit(train, shrink=0.0)
    data = T.TallRecData(pd.DataFrame({"user": [1, 2, 3], "item": [1, 2, 99], "label": [1, 0, 1], "rating": [5, 1, 4],
                                       "history": [[3] * 10] * 3,
                                       "history_ratings": [[5.0] * 10, [1.0] * 10, [5.0] * 5 + [1.0] * 5],
                                       "window_end": 0, "candidate_time": 1}))
    sc = p.scores(data)
    assert sc["item_mean"].tolist() == [5.0, 1.0, 3.0], "an unseen item gets the global mean"
    assert sc["user_rate"].tolist() == [1.0, 0.0, 0.5]
    flipped = data.examples.assign(label=[0, 1, 0], rating=[1, 5, 1])
    assert np.array_equal(p.scores(T.TallRecData(flipped))["user_rate"], sc["user_rate"]), "no label in the features"
    shrunk = T.Priors.fit(train, shrink=2.0).scores(data)["item_mean"]
    assert shrunk[0] == pytest.approx((10 + 2 * 3) / 4)
    # the combination learns to use both signals on separable examples
    rng = np.random.default_rng(0)
    n = 400
    items = rng.integers(1, 3, n)
    rates = rng.random(n)
    hr = [[5.0] * int(round(10 * r)) + [1.0] * (10 - int(round(10 * r))) for r in rates]
    y = ((items == 1).astype(float) + rates + rng.normal(0, 0.3, n) > 1.0).astype(int)
    ex = T.TallRecData(pd.DataFrame({"user": range(n), "item": items, "label": y, "rating": 0, "history": [[3]] * n,
                                     "history_ratings": hr, "window_end": 0, "candidate_time": 1}))
    pc = T.Priors.fit(train, ex)
    s = pc.scores(ex)
    assert S.auc(y, s["combined"]) > max(S.auc(y, s["item_mean"]), S.auc(y, s["user_rate"]))


class ByItem:
    """A sequential model whose score of item i is i (whatever the history)."""
    def __init__(self, n_items):
        self.n_items = n_items

    def score(self, users, histories):
        return np.tile(np.arange(self.n_items + 1, dtype=float), (len(histories), 1))


def test_shots_split_trains_on_windows_and_validates_on_candidates():
    df = ratings_frame(n_users=5, n_items=30)
    shots = T.build_tallrec(df)
    catalog = np.arange(1, 41)
    split = T.shots_split(shots, catalog)
    assert split.n_items == 40 and split.n_users == 5 and len(split.test) == 0
    assert len(split.train) == 50 and len(split.valid) == 5
    hist = split.training_histories()
    for u, ex in zip(range(1, 6), shots.examples.itertuples()):
        assert split.item_map.decode(hist[u]).tolist() == ex.history, "windows in time order, no candidate"
        assert split.item_map.decode(split.valid[split.valid.user == u].item).tolist() == [ex.item]
    s = T.sequential_candidate_scores(ByItem(40), shots, split.item_map, batch_size=2)
    assert s.tolist() == split.item_map.encode(shots.examples.item.to_numpy()).tolist()


def test_tallrec_refuses_validation_examples_of_one_class(tiny):
    df = ratings_frame(n_users=4, n_items=30)
    df["rating"] = 5.0
    data = T.build_tallrec(df)
    model = T.TallRec(tiny, {i: f"F{i}" for i in range(1, 31)}, T.LoraSettings(r=2, epochs=1))
    with pytest.raises(ValueError, match="both"):
        model.fit(data, valid=data, progress=False)
    assert not hasattr(tiny.model, "peft_config"), "nothing was added to the model"
