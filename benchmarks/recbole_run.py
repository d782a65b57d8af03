"""Train and test one RecBole 1.2.1 sequential model on an exported ml-100k split.

Runs inside the RecBole environment (``make recbole`` builds ``.venv-recbole``), never
inside the course's: it imports RecBole, not ``course_lib``. ``benchmarks/sequential.py
--compare-recbole`` exports the course's leave-one-out split as an atomic file and calls
this script once per (model, seed)::

    .venv-recbole/bin/python benchmarks/recbole_run.py DATA_DIR GRU4Rec --seed 0 --epochs 100 \\
        --stopping-step 4 --out run.json
    .venv-recbole/bin/python benchmarks/recbole_run.py --check     # can RecBole be imported?

``DATA_DIR/ml-100k/ml-100k.inter`` holds the atomic file (``user_id:token``,
``item_id:token``, ``rating:float``, ``timestamp:float``). RecBole's logs (``log/``,
``log_tensorboard/``) go to a folder beside the output JSON (``run.work/``).

The configuration is RecBole's own: the published files in the installed package
(``properties/overall.yaml``, ``properties/model/<Model>.yaml``, ``properties/dataset/
ml-100k.yaml`` and, for sequential models, ``properties/quick_start_config/sequential.yaml``),
which RecBole's ``Config`` merges itself. This script overrides only what the comparison
needs (see ``comparison_overrides``) and reports the published files, the overrides and
the final configuration in the output JSON. Training follows ``recbole.quick_start.
run_recbole`` step by step (that module imports Ray at the top, which the comparison does
not need), without its FLOPs count and environment table.

Besides RecBole's own test metrics, the JSON holds the same metrics with each user's
earlier items removed from the candidates, the course's protocol: RecBole's sequential
evaluation keeps seen items as candidates (``repeatable: True``, which RecBole requires
for sequential models), the course's ``metrics.evaluate`` removes them. It also holds
the test item of every user, as original tokens, for the same-split check.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

MODELS = ("GRU4Rec", "SASRec", "BERT4Rec")
DATASET = "ml-100k"
K = 10


def published_files(model: str) -> dict[str, dict]:
    """RecBole's published configuration files for ``model`` on ml-100k, read from the installed
    package. Returns ``{path relative to the package: parsed YAML}``, in the order RecBole
    merges them (later ones win), only the files that exist."""
    import recbole
    import yaml

    root = Path(recbole.__file__).resolve().parent
    files = ["properties/overall.yaml", f"properties/model/{model}.yaml", "properties/dataset/sample.yaml",
             f"properties/dataset/{DATASET}.yaml", "properties/quick_start_config/sequential.yaml"]
    out = {}
    for rel in files:
        path = root / rel
        if path.is_file():
            out[rel] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return out


def comparison_overrides(model: str, seed: int, epochs: int, stopping_step: int, checkpoint_dir: str,
                         published: dict[str, dict]) -> dict:
    """The settings the comparison changes in RecBole's published configuration; returns a
    ``config_dict`` for ``recbole.config.Config``.

    Leave-one-out by time with full ranking, HR@10 / NDCG@10 with early stopping on
    validation NDCG@10, histories of at most 50 items, no rating threshold and no filtering
    of users or items (the exported split already dropped what the course's split drops),
    the run's seed, epoch cap and patience, CPU only. CE-loss models train without
    negative sampling (RecBole refuses CE with ``train_neg_sample_args`` set).
    """
    loss_type = None
    for content in published.values():  # later files win, as in RecBole
        loss_type = content.get("loss_type", loss_type)
    overrides = {
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "repeatable": True,  # RecBole requires it for sequential models (its quick-start default)
        "metrics": ["Hit", "NDCG"],
        "topk": [K],
        "valid_metric": f"NDCG@{K}",
        "MAX_ITEM_LIST_LENGTH": 50,
        "threshold": None,
        "val_interval": None,
        "rm_dup_inter": None,
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        "seed": seed,
        "epochs": epochs,
        "stopping_step": stopping_step,
        "use_gpu": False,
        "gpu_id": "",
        "worker": 0,
        "checkpoint_dir": checkpoint_dir,
        "show_progress": False,
    }
    if str(loss_type).upper() == "CE":
        overrides["train_neg_sample_args"] = None
    return overrides


def _jsonable(value):
    """Config values (enums, devices, tuples, numpy scalars) as plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    return str(value)


def seen_items_before_test(dataset) -> dict[int, "object"]:
    """Each user's items before the test item (training and validation), as RecBole item IDs.

    Read from ``dataset`` after ``create_dataset`` and before ``data_preparation`` (which
    augments and splits it): its interactions are still one frame. Returns
    ``{user id: int64 array of item ids}``.
    """
    import numpy as np

    df = dataset.inter_feat[[dataset.uid_field, dataset.iid_field, dataset.time_field]]
    df = df.sort_values([dataset.uid_field, dataset.time_field], kind="mergesort")
    last = df.groupby(dataset.uid_field).cumcount(ascending=False) == 0
    before = df[~last]
    return {int(u): np.asarray(g, dtype=np.int64) for u, g in before.groupby(dataset.uid_field)[dataset.iid_field]}


def ranking_metrics(model, loader, seen: dict[int, "object"], uid_field: str, k: int = K) -> dict:
    """HR@k and NDCG@k of ``model`` on a sequential full-ranking ``loader``, twice: with every
    item a candidate (RecBole's protocol for sequential models) and with each user's
    earlier items removed (the course's protocol; a held-out item the user had already seen
    then counts as a miss). A target's rank counts the items scored strictly higher.
    Returns ``{"HR@k", "NDCG@k", "HR@k seen excluded", "NDCG@k seen excluded", "users"}``."""
    import torch

    sums = {"hit": 0.0, "ndcg": 0.0, "hit_ex": 0.0, "ndcg_ex": 0.0}
    n = 0
    model.eval()
    with torch.no_grad():
        for interaction, _, _, positive_i in loader:
            scores = model.full_sort_predict(interaction).view(len(positive_i), -1).clone()
            scores[:, 0] = -torch.inf  # padding
            rows = torch.arange(len(positive_i))
            target = scores[rows, positive_i]
            rank = (scores > target[:, None]).sum(1)
            sums["hit"] += float((rank < k).sum())
            sums["ndcg"] += float(torch.where(rank < k, 1.0 / torch.log2(rank.double() + 2), 0.0).sum())
            users = interaction[uid_field].tolist()
            for r, u in enumerate(users):
                items = seen.get(int(u))
                if items is not None and len(items):
                    scores[r, torch.as_tensor(items)] = -torch.inf
            target = scores[rows, positive_i]
            rank = (scores > target[:, None]).sum(1)
            ok = (rank < k) & torch.isfinite(target)
            sums["hit_ex"] += float(ok.sum())
            sums["ndcg_ex"] += float(torch.where(ok, 1.0 / torch.log2(rank.double() + 2), 0.0).sum())
            n += len(positive_i)
    return {f"HR@{k}": sums["hit"] / n, f"NDCG@{k}": sums["ndcg"] / n,
            f"HR@{k} seen excluded": sums["hit_ex"] / n, f"NDCG@{k} seen excluded": sums["ndcg_ex"] / n, "users": n}


def test_items(test_data) -> dict[str, str]:
    """The test target of every user in RecBole's test dataloader, as original tokens:
    ``{user token: item token}``. Raises if a user has more than one test row."""
    ds = test_data._dataset
    users = ds.id2token(ds.uid_field, ds.inter_feat[ds.uid_field].numpy())
    items = ds.id2token(ds.iid_field, ds.inter_feat[ds.iid_field].numpy())
    out: dict[str, str] = {}
    for u, i in zip(users.tolist(), items.tolist()):
        if u in out:
            raise RuntimeError(f"user {u} has more than one test row in RecBole's split; expected leave-one-out")
        out[str(u)] = str(i)
    return out


def run(data_dir: str, model_name: str, seed: int, epochs: int, stopping_step: int, out: str,
        threads: int = 1) -> dict:
    """Train ``model_name`` with RecBole on ``data_dir``, test it, write the JSON report to ``out``.
    Returns the report."""
    import torch

    torch.set_num_threads(threads)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    data_path = Path(data_dir).resolve() / DATASET
    if not (data_path / f"{DATASET}.inter").is_file():
        raise FileNotFoundError(f"{data_path / (DATASET + '.inter')} not found: export the split first "
                                "(benchmarks/sequential.py --compare-recbole does)")
    out_path = Path(out).resolve()
    work = out_path.with_name(out_path.stem + ".work")  # RecBole's log/ and log_tensorboard/, beside the JSON
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # RecBole writes its logs and its checkpoint under the working directory
    sys.argv = sys.argv[:1]  # RecBole's Config also reads --key=value from the command line

    published = published_files(model_name)
    overrides = comparison_overrides(model_name, seed, epochs, stopping_step, str(work / "saved"), published)
    config = Config(model=model_name, dataset=DATASET, config_dict=overrides)
    # Config points the dataset named ml-100k at the copy bundled with RecBole (its own
    # timestamps); the comparison reads the exported split instead.
    config["data_path"] = str(data_path)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)

    t_all = time.perf_counter()
    dataset = create_dataset(config)
    seen = seen_items_before_test(dataset)
    n_inter = len(dataset.inter_feat)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    valid_scores: list[float] = []
    t0 = time.perf_counter()
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=True, show_progress=False,
        callback_fn=lambda epoch, score: valid_scores.append(float(score)))
    train_s = time.perf_counter() - t0
    # The best epoch's checkpoint, as trainer.evaluate(load_best_model=True) would load it;
    # it holds RecBole's Config object, which torch.load's weights-only default refuses.
    checkpoint = torch.load(trainer.saved_model_file, map_location=config["device"], weights_only=False)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    Path(trainer.saved_model_file).unlink()  # only this run reads it
    test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    ours = ranking_metrics(model, test_data, seen, dataset.uid_field)

    report = {
        "model": model_name,
        "seed": seed,
        "recbole_version": __import__("recbole").__version__,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "data_file": str(data_path / f"{DATASET}.inter"),
        "interactions loaded": int(n_inter),
        "users": int(dataset.user_num - 1),
        "items": int(dataset.item_num - 1),
        "published_files": published,
        "overrides": _jsonable(overrides | {"data_path": str(data_path)}),
        "config": _jsonable(dict(config.final_config_dict)),
        "test": {f"NDCG@{K}": float(test_result[f"ndcg@{K}"]), f"HR@{K}": float(test_result[f"hit@{K}"])},
        "test, recomputed": {k: v for k, v in ours.items() if "seen" not in k},
        "test, seen items excluded": {f"NDCG@{K}": ours[f"NDCG@{K} seen excluded"],
                                      f"HR@{K}": ours[f"HR@{K} seen excluded"]},
        "valid best score": float(best_valid_score),
        "valid best result": _jsonable(dict(best_valid_result or {})),
        "valid scores": valid_scores,
        "best epoch": int(checkpoint["epoch"]) + 1,
        "epochs run": len(valid_scores),
        "train s": train_s,
        "total s": time.perf_counter() - t_all,
        "test items": test_items(test_data),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report


def check() -> int:
    """Import what a run needs; print RecBole's version. Returns 0, or 1 with the error."""
    try:
        import recbole
        from recbole.config import Config  # noqa: F401
        from recbole.data import create_dataset, data_preparation  # noqa: F401
        from recbole.utils import get_model, get_trainer  # noqa: F401  (imports tensorboard)
    except Exception as exc:  # noqa: BLE001 - any import failure means the environment is incomplete
        print(f"cannot import RecBole: {type(exc).__name__}: {exc}")
        return 1
    print(f"recbole {recbole.__version__}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data_dir", nargs="?", help="folder holding ml-100k/ml-100k.inter")
    p.add_argument("model", nargs="?", choices=MODELS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=100, help="epoch cap")
    p.add_argument("--stopping-step", type=int, default=10,
                   help="RecBole's stopping_step: training stops after stopping_step + 1 validations without improvement")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", help="output JSON path")
    p.add_argument("--check", action="store_true", help="only check that RecBole can be imported")
    a = p.parse_args(argv)
    if a.check:
        return check()
    if not (a.data_dir and a.model and a.out):
        p.error("give DATA_DIR, MODEL and --out (or --check)")
    rep = run(a.data_dir, a.model, a.seed, a.epochs, a.stopping_step, a.out, a.threads)
    print(f"{a.model} seed {a.seed}: test NDCG@{K} {rep['test'][f'NDCG@{K}']:.4f}, HR@{K} {rep['test'][f'HR@{K}']:.4f} "
          f"(seen excluded: {rep['test, seen items excluded'][f'NDCG@{K}']:.4f} / "
          f"{rep['test, seen items excluded'][f'HR@{K}']:.4f}); best epoch {rep['best epoch']} of "
          f"{rep['epochs run']}, {rep['train s']:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
