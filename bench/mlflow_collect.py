"""Benchmark: the mlflow collector against a real tracking server (one server, one run of this script).

Seeds RUNS runs (params, metrics, tags, a dataset input) over four
experiments and VERSIONS model versions (20 registered models) whose model
files (MLmodel, environment files, README, a MODEL_SIZE weights file) are
written into the server's artefact store, then prints:

1. the first collection (pipeline: redact, hash, store, sign) against a bare
   loop making the same listing calls and downloads with the same pool width
   (target: ratio <= 1.3);
2. the second, unchanged run as a share of the first (target <= 10%);
3. the peak RSS of a collecting process (a fresh interpreter) while it
   handles one model version with a BIG weights file (target < 150 MB).

The server runs one worker process (``--server-workers``; on a 2-CPU machine
more workers measured slower, against a SQLite backend). Usage: python bench/mlflow_collect.py [--runs 2000]
[--versions 200] [--model-mib 4] [--big-gib 2] [--work DIR (keep and reuse the seeded server)]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from mlflow_server import MlflowServer, Rest  # noqa: E402

API = "/api/2.0/mlflow"
WORKERS = 4
EXPERIMENTS = [f"bench-exp-{i}" for i in range(4)]
MODELS = 20

RSS_CHILD = """
import sys, time
if sys.argv[4] == "without-pandas":  # as on a machine where pandas is not installed (sqlite-utils imports it)
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("pandas", "numpy", "pyarrow"):
                raise ImportError(name)
    sys.meta_path.insert(0, Block())
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from mlflow_server import collect
from affidavit.store.local import LocalStore
from affidavit.signing.keys import LocalSigner, generate_private_key
store = LocalStore.open(Path(sys.argv[2]), create=True)
def hwm():  # peak RSS of this process image in KiB (ru_maxrss would include the parent's at fork time)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
base = hwm()
t = time.perf_counter()
r = collect(store, LocalSigner(generate_private_key()), "big", sys.argv[3], models=["bench-big"],
            collect_experiments=False, timeout=120)
dt = time.perf_counter() - t
assert r.status == "signed", r.error
print(base, hwm(), dt, "mlflow" in sys.modules)
"""


# -- seeding --------------------------------------------------------------------------------


def _model_files(path: Path, size: int, i: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "MLmodel").write_text(f"artifact_path: model\nflavors:\n  python_function: {{}}\nmodel_uuid: {i:032x}\n"
                                  "mlflow_version: 3.1.0\n")
    (path / "conda.yaml").write_text("name: env\ndependencies:\n  - python=3.11\n")
    (path / "requirements.txt").write_text("scikit-learn==1.5.0\n")
    (path / "python_env.yaml").write_text("python: 3.11.0\n")
    (path / "README.md").write_text(f"# Model {i}\n\nIntended use: benchmark.\n")
    with (path / "model.pkl").open("wb") as f:
        f.write(os.urandom(size))


def _run(s: requests.Session, url: str, exp: str, i: int) -> dict[str, Any]:
    info = s.post(f"{url}{API}/runs/create", json={"experiment_id": exp, "run_name": f"run-{i}",
                                                   "start_time": 1_700_000_000_000 + i}).json()["run"]["info"]
    rid = info["run_id"]
    s.post(f"{url}{API}/runs/log-batch", json={
        "run_id": rid,
        "params": [{"key": f"p{k}", "value": str(i * k)} for k in range(10)],
        "metrics": [{"key": m, "value": 0.5 + (i % 50) / 100, "timestamp": 1_700_000_000_000, "step": 0}
                    for m in ("accuracy", "f1", "auc", "loss", "rmse")],
        "tags": [{"key": "mlflow.source.git.commit", "value": f"{i:040x}"}, {"key": "mlflow.user", "value": "bench"},
                 {"key": "team", "value": f"t{i % 7}"}],
    }).raise_for_status()
    s.post(f"{url}{API}/runs/log-inputs", json={"run_id": rid, "datasets": [{
        "tags": [{"key": "mlflow.data.context", "value": "training"}],
        "dataset": {"name": f"data-{i % 13}", "digest": f"{i:08x}", "source_type": "s3",
                    "source": f'{{"uri": "s3://bench/data-{i % 13}.parquet"}}', "schema": "", "profile": ""}}],
    }).raise_for_status()
    s.post(f"{url}{API}/runs/update", json={"run_id": rid, "status": "FINISHED",
                                            "end_time": 1_700_000_100_000 + i}).raise_for_status()
    return dict(info)


def seed(server: MlflowServer, runs: int, versions: int, model_size: int, big: int) -> None:
    url = server.url
    s = requests.Session()
    exps = [s.post(f"{url}{API}/experiments/create", json={"name": n}).json()["experiment_id"] for n in EXPERIMENTS]
    with ThreadPoolExecutor(WORKERS) as pool:
        infos = list(pool.map(lambda i: _run(requests.Session(), url, exps[i % len(exps)], i), range(runs)))
    rest = Rest(url)
    for m in range(MODELS):
        rest.create_model(f"bench-model-{m:02d}")
    for i, info in enumerate(infos[:versions]):
        artefacts = info["artifact_uri"].removeprefix("mlflow-artifacts:").lstrip("/")
        _model_files(server.artifacts / artefacts / "model", model_size, i)
        name = f"bench-model-{i % MODELS:02d}"
        v = rest.create_version(name, f"runs:/{info['run_id']}/model", info["run_id"])
        if i % 3 == 0:
            rest.set_version_tag(name, v, "approved_by", "carol")
        if i >= versions - MODELS:
            rest.set_alias(name, "champion", v)
    # one version whose weights file is BIG (sparse on the server's disk: it is read and sent in full)
    big_info = _run(s, url, exps[0], runs + 1)
    root = server.artifacts / big_info["artifact_uri"].removeprefix("mlflow-artifacts:").lstrip("/") / "model"
    _model_files(root, 1024, 0)
    with (root / "weights.bin").open("wb") as f:
        f.truncate(big)
    rest.create_model("bench-big")
    rest.create_version("bench-big", f"runs:/{big_info['run_id']}/model", big_info["run_id"])


# -- the bare loop: the same calls, no evidence handling --------------------------------------


def bare_loop(url: str, files: bool = True) -> tuple[int, int]:
    """Listing calls and downloads as the collector makes them; returns (calls, bytes).

    ``files=False``: the listing calls alone, as an unchanged second run makes them.
    """
    s = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=WORKERS + 2)
    s.mount("http://", adapter)
    calls = 0
    total = 0

    def get(endpoint: str, **params: Any) -> Any:
        nonlocal calls
        calls += 1
        r = s.get(url + endpoint, params=params, timeout=60)
        r.raise_for_status()
        return r.json()

    def post(endpoint: str, body: dict[str, Any]) -> Any:
        nonlocal calls
        calls += 1
        r = s.post(url + endpoint, json=body, timeout=60)
        r.raise_for_status()
        return r.json()

    def pages(fetch: Any, key: str) -> Any:
        token = None
        while True:
            body = fetch(token)
            yield from body.get(key, [])
            token = body.get("next_page_token")
            if not token:
                return

    def download(path: str) -> int:
        n = 0
        with s.get(f"{url}/api/2.0/mlflow-artifacts/artifacts/{path}", stream=True, timeout=60) as r:
            r.raise_for_status()
            for chunk in r.iter_content(1 << 20):
                n += len(chunk)
        return n

    def list_files(root: str) -> list[str]:
        out, todo = [], [root]
        while todo:
            d = todo.pop()
            for f in get("/api/2.0/mlflow-artifacts/artifacts", path=d).get("files", []):
                (todo if f.get("is_dir") else out).append(f"{d}/{f['path']}")
        return out

    ids, all_ids = [], []
    for e in pages(lambda t: post(API + "/experiments/search", {"max_results": 500, "view_type": "ALL",
                                                               **({"page_token": t} if t else {})}), "experiments"):
        all_ids.append(e["experiment_id"])
        if e["name"] in EXPERIMENTS:
            ids.append(e["experiment_id"])
    with ThreadPoolExecutor(WORKERS) as pool:
        for rm in pages(lambda t: get(API + "/registered-models/search", max_results=500,
                                      **({"page_token": t} if t else {})), "registered_models"):
            if not rm["name"].startswith("bench-model-"):
                continue
            get(API + "/registered-models/get", name=rm["name"])
            versions = list(pages(lambda t: get(API + "/model-versions/search", filter=f"name = '{rm['name']}'",
                                                max_results=500, **({"page_token": t} if t else {})),
                                  "model_versions"))
            runs = []
            for start in range(0, len(versions), 64):
                flt = "attributes.run_id IN (" + ", ".join(f"'{v['run_id']}'" for v in versions[start:start + 64]) + ")"
                runs += list(pages(lambda t: post(API + "/runs/search", {
                    "experiment_ids": all_ids, "filter": flt, "max_results": 500, "run_view_type": "ALL",
                    **({"page_token": t} if t else {})}), "runs"))
            futures = []
            for run in runs if files else ():
                root = run["info"]["artifact_uri"].removeprefix("mlflow-artifacts:").lstrip("/") + "/model"
                futures += [pool.submit(download, p) for p in list_files(root)]
            total += sum(f.result() for f in futures)
        for _ in pages(lambda t: post(API + "/runs/search", {"experiment_ids": ids, "max_results": 500,
                                                             "run_view_type": "ALL",
                                                             **({"page_token": t} if t else {})}), "runs"):
            pass
    return calls, total


# -- the collector ------------------------------------------------------------------------------


def collect_once(store: Any, url: str) -> Any:
    from mlflow_server import collect

    from affidavit.signing.keys import LocalSigner, generate_private_key

    r = collect(store, LocalSigner(generate_private_key()), "bench", url, models=["bench-model-*"],
                experiments=EXPERIMENTS, collect_experiments=True, timeout=60, max_retries=2,
                download_workers=WORKERS)
    assert r.status in ("signed", "empty"), r.error
    return r


class Spent:
    """Time spent in a few functions the pipeline calls (the store's fsync, redaction of documents)."""

    def __init__(self) -> None:
        from affidavit.collectors.redact import Redactor

        self.seconds = {"fsync": 0.0, "redact": 0.0}
        self._wrap(os, "fsync", "fsync")
        self._wrap(Redactor, "redact_document", "redact")

    def _wrap(self, owner: Any, attr: str, key: str) -> None:
        original = getattr(owner, attr)

        def timed_call(*args: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return original(*args, **kw)
            finally:
                self.seconds[key] += time.perf_counter() - t

        setattr(owner, attr, timed_call)

    def take(self) -> dict[str, float]:
        out, self.seconds = self.seconds, {k: 0.0 for k in self.seconds}
        return out


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--versions", type=int, default=200)
    ap.add_argument("--model-mib", type=float, default=4.0, help="size of each version's weights file")
    ap.add_argument("--big-gib", type=float, default=2.0, help="size of the one big model file (RSS test)")
    ap.add_argument("--repeat", type=int, default=2, help="passes of the bare loop and first run (best kept)")
    ap.add_argument("--server-workers", type=int, default=1,
                    help="the tracking server's worker processes (`mlflow server` defaults to 4)")
    ap.add_argument("--work", type=Path, help="keep the seeded server here and reuse it on the next call "
                    "(default: a temporary directory, removed after)")
    args = ap.parse_args()
    from affidavit.store.local import LocalStore

    with tempfile.TemporaryDirectory(prefix="bench-mlflow-") as tmp:
        work = args.work or Path(tmp)
        seeded = (work / "server" / "seeded").exists()
        server = MlflowServer(work / "server", workers=args.server_workers).start()
        try:
            print(f"tracking server: {args.server_workers} worker process(es), {os.cpu_count()} CPUs", flush=True)
            if seeded:
                print(f"reusing the server seeded in {work}", flush=True)
            else:
                t, _ = timed(seed, server, args.runs, args.versions, int(args.model_mib * 1048576),
                             int(args.big_gib * 1073741824))
                (work / "server" / "seeded").touch()
                print(f"seeded {args.runs} runs, {args.versions} versions ({args.model_mib:g} MiB weights each) "
                      f"and one {args.big_gib:g} GiB model in {t:.1f} s", flush=True)
            os.sync()  # the seeding's dirty pages must not slow down the stores' fsync calls below
            spent = Spent()
            bare, first, second, listing = [], [], [], []
            for i in range(args.repeat):
                tb, (calls, nbytes) = timed(bare_loop, server.url)
                bare.append(tb)
                shutil.rmtree(work / f"store-{i}", ignore_errors=True)
                store = LocalStore.open(work / f"store-{i}", create=True)
                spent.take()
                tf, r1 = timed(collect_once, store, server.url)
                s1 = spent.take()
                first.append(tf)
                ts, r2 = timed(collect_once, store, server.url)
                s2 = spent.take()
                second.append(ts)
                tl, (lcalls, _) = timed(bare_loop, server.url, False)
                listing.append(tl)
                print(f"pass {i + 1}: bare loop {tb:.2f} s ({calls} calls, {nbytes / 1048576:.0f} MiB); "
                      f"first run {tf:.2f} s ({len(r1.artefacts)} artefacts; of which {s1['fsync']:.2f} s in the "
                      f"store's fsync and {s1['redact']:.2f} s redacting documents); second run {ts:.2f} s "
                      f"({r2.status}, {len(r2.artefacts)} artefacts; {s2['redact']:.2f} s redacting); the same listing calls "
                      f"alone {tl:.2f} s ({lcalls} calls)", flush=True)
                store.close()
            b, f, s = min(bare), min(first), min(second)
            print(f"first run / bare loop: {f / b:.2f} (target <= 1.3)")
            print(f"second run / first run: {100 * s / f:.1f}% (target <= 10%); the listing calls alone (the "
                  f"server's part, no evidence handling): {100 * min(listing) / f:.1f}% of the first run")
            for variant in ("as-installed", "without-pandas"):
                shutil.rmtree(work / f"store-{variant}", ignore_errors=True)
                proc = subprocess.run([sys.executable, "-c", RSS_CHILD, str(TESTS), str(work / f"store-{variant}"),
                                       server.url, variant], capture_output=True, text=True, timeout=1800)
                assert proc.returncode == 0, proc.stderr[-3000:]
                base_kb, peak_kb, dt, imported = proc.stdout.split()
                print(f"{args.big_gib:g} GiB model file ({variant}): collected in {float(dt):.1f} s, peak RSS "
                      f"{int(peak_kb) / 1024:.0f} MB (after imports {int(base_kb) / 1024:.0f} MB; target < 150 MB); "
                      f"mlflow imported: {imported}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
