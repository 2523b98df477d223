"""Per-rank start-up of fairseq-train's data pipeline at UniRef scale, on synthetic data-bins written directly.

    .venv/bin/python benchmarks/scale_startup.py [--records 1000000 5000000] [--work DIR] [--max-tokens 4096]
                                                 [--max-positions 1024] [--extrapolate 60000000] [--repeats 1]
                                                 [--json PATH]

A ``fairseq-train`` rank, before its first update, runs ``Trainer.get_train_iterator``: ``task.load_dataset``
(open and check the split, build the dataset chain) and ``task.get_batch_iterator`` (order, filter and batch
every protein), then asks for the first batch (``reset_dummy_batch``, then the epoch iterator's first item).
This script does exactly that, in a fresh process per measurement, through fairseq's real ``Trainer`` (tiny
model ``esm1b_t4_1M``; one rank; every rank does the same work on the whole split), and reports:

- ``first batch s``: wall seconds from ``get_train_iterator(epoch=1, load_dataset=True)`` to the first batch;
- ``peak B/protein``: (peak RSS − RSS before loading) / records: the high-water mark of everything the rank
  touched, temporaries and memory-mapped pages included;
- ``kept B/protein``: private (anonymous) memory still held after the first batch / records;
- ``epoch start s``: the start of epoch 2 as fairseq-train does it (``get_train_iterator(2)``, which rebuilds
  the batches under ``--cluster-sampling``, then the epoch iterator and its first batch).

Modes (``--modes``, default all): ``plain``; ``cluster_sampling``; and with ``--batch-cache-dir`` (batches formed
once per node, ``data/batch_cache.py``): ``shared_first_rank`` (the directory empty: this rank forms and stores
the batches) and ``shared_other_ranks`` (the directory filled by a first rank beforehand: this rank maps them).
The mapped batch files are page cache shared by the node, not private memory: the private figures of
``shared_other_ranks`` are what each further rank of a node adds.

The data-bins are synthetic but shaped like the real thing: lengths drawn from 20,000 real UniProtKB proteins
(``/work/shared/data/pretrain_uniprot``, else the shipped sample), random canonical residues, each record ending
in ``</s>``, written with ``data/binarize.write_index`` (fairseq's mmap format, byte for byte what
fairseq-preprocess writes), plus ``train.clusters.npy`` (dense cluster ids, geometric cluster sizes with mean
``mean_cluster_size`` = 5, in random record order). :func:`make_data_bin` is importable (other benchmarks,
``tests/test_epoch_batches.py``). Data-bins are kept in ``--work`` and reused when their record count matches.

Figures at ``--extrapolate`` records are the straight line through the first and last measured sizes
(``v1 + (v2 − v1) · (N − n1) / (n2 − n1)``): an extrapolation, labelled so in the output, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL_LENGTHS = (Path("/work/shared/data/pretrain_uniprot/mmseqs2_examples_DB.fasta.gz"),
                ROOT / "examples" / "data" / "uniprot_sample.fasta.gz")
CANONICAL = "ACDEFGHIKLMNPQRSTVWY"
#: tokens generated once and reused at shifting offsets (the residues are noise; only their ids matter)
POOL_TOKENS = 1 << 24
RECORDS_PER_CHUNK = 1 << 18
ARCH = "esm1b_t4_1M"


def real_lengths(paths: tuple[Path, ...] = REAL_LENGTHS) -> np.ndarray:
    """Residue counts of real UniProtKB proteins (the first readable file of ``paths``)."""
    from fairseq_esm.io.fasta import read_fasta

    for path in paths:
        if path.exists():
            return np.fromiter((len(seq) for _, seq in read_fasta(str(path))), dtype=np.int64)
    raise FileNotFoundError(f"none of {', '.join(map(str, paths))}")


def write_synthetic_split(prefix: str | Path, n_records: int, lengths: np.ndarray, seed: int = 0) -> np.ndarray:
    """``prefix.bin``/``.idx`` of ``n_records`` random proteins whose lengths are drawn from ``lengths``; returns
    the stored sizes (residues + ``</s>``)."""
    from fairseq.data.indexed_dataset import best_fitting_int_dtype

    from fairseq_esm.data.binarize import token_table, write_data_dictionary, write_index
    from fairseq_esm.data.integrity import load_dictionary

    prefix = Path(prefix)
    dictionary = load_dictionary(write_data_dictionary(prefix.parent))
    dtype = best_fitting_int_dtype(len(dictionary))
    table = token_table(dictionary)
    rng = np.random.default_rng(seed)
    pool = table[np.frombuffer(CANONICAL.encode(), np.uint8)][rng.integers(0, len(CANONICAL), POOL_TOKENS)]
    sizes = rng.choice(lengths, n_records) + 1  # + </s>
    with open(f"{prefix}.bin", "wb") as out:
        for start in range(0, n_records, RECORDS_PER_CHUNK):
            chunk = sizes[start : start + RECORDS_PER_CHUNK]
            total = int(chunk.sum())
            tokens = np.empty(total, dtype)
            done = 0
            while done < total:  # the pool, from a random offset, as often as the chunk needs
                offset = int(rng.integers(0, POOL_TOKENS // 2))
                step = min(total - done, POOL_TOKENS - offset)
                tokens[done : done + step] = pool[offset : offset + step]
                done += step
            tokens[np.cumsum(chunk) - 1] = dictionary.eos()
            out.write(tokens.tobytes())
    write_index(f"{prefix}.idx", sizes, dtype)
    return sizes


def synthetic_clusters(n_records: int, mean_cluster_size: float, seed: int = 0) -> np.ndarray:
    """Dense cluster ids ``0..C-1`` for ``n_records`` records: geometric cluster sizes with the given mean (many
    singletons, a long tail), members scattered over the split in random order."""
    rng = np.random.default_rng(seed + 1)
    sizes = rng.geometric(1.0 / mean_cluster_size, int(n_records / mean_cluster_size * 1.2) + 16)
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), n_records)) + 1]
    sizes[-1] -= int(sizes.sum()) - n_records
    clusters = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    return clusters[rng.permutation(n_records)]


def make_data_bin(out_dir: str | Path, n_records: int, *, seed: int = 0, valid_records: int = 2000,
                  mean_cluster_size: float = 5.0, lengths: np.ndarray | None = None) -> Path:
    """A fairseq data-bin of synthetic proteins: ``dict.txt``, ``train`` (``n_records``), ``valid``,
    ``train.clusters.npy``. Reused as it is when ``out_dir/records.json`` says it holds ``n_records``."""
    out = Path(out_dir)
    stamp = out / "records.json"
    wanted = {"records": n_records, "seed": seed, "valid": valid_records, "mean_cluster_size": mean_cluster_size}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return out
    out.mkdir(parents=True, exist_ok=True)
    lengths = real_lengths() if lengths is None else np.asarray(lengths)
    write_synthetic_split(out / "train", n_records, lengths, seed)
    write_synthetic_split(out / "valid", valid_records, lengths, seed + 7)
    np.save(out / "train.clusters.npy", synthetic_clusters(n_records, mean_cluster_size, seed))
    stamp.write_text(json.dumps(wanted))
    return out


# ---- measuring one rank's start-up (in the process that calls it) ------------------------------------


def memory() -> dict[str, int]:
    """This process's current and peak resident memory, in bytes (Linux ``/proc/self/status``)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def training_setup(data: str, *extra: str, max_tokens: int = 4096, max_positions: int = 1024, seed: int = 1):
    """fairseq-train's config, task, model, criterion and Trainer for ``data`` (one CPU rank)."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    argv = [data, "--user-dir", str(ROOT / "fairseq_esm"), "--task", "protein_mlm", "--criterion", "esm_masked_lm",
            "--arch", ARCH, "--max-positions", str(max_positions), "--max-tokens", str(max_tokens), "--seed",
            str(seed), "--num-workers", "0", "--optimizer", "adam", "--lr", "1e-4", "--cpu", *extra]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    task = tasks.setup_task(cfg.task)
    model, criterion = task.build_model(cfg.model), task.build_criterion(cfg.criterion)
    return cfg, task, Trainer(cfg, task, model, criterion)


def measure(data: str, *extra: str, max_tokens: int = 4096, max_positions: int = 1024, seed: int = 1,
            trace: bool = False) -> dict:
    """One rank's start-up on ``data`` as fairseq-train runs it; call in a fresh process (peak RSS is per process).

    With ``trace``, Python's and numpy's allocations are traced (``tracemalloc``; numpy reports its array buffers
    to it): the peak and the held bytes then count exactly the private memory the data pipeline allocates, not the
    pages of the memory-mapped ``.bin``/``.idx`` the kernel maps around each read (shared page cache, which the
    RSS figures include). Tracing slows Python, so its timings are not reported.
    """
    import tracemalloc

    import torch

    torch.set_num_threads(1)
    cfg, task, trainer = training_setup(data, *extra, max_tokens=max_tokens, max_positions=max_positions, seed=seed)
    if trace:
        tracemalloc.start()
    before = memory()
    start = time.perf_counter()
    epoch_itr = trainer.get_train_iterator(epoch=1, load_dataset=True)  # what checkpoint_utils.load_checkpoint calls
    loaded = time.perf_counter()
    first = next(epoch_itr.next_epoch_itr(fix_batches_to_gpus=False, shuffle=True))
    first_batch = time.perf_counter()
    after = memory()
    traced = tracemalloc.get_traced_memory() if trace else (0, 0)
    tracemalloc.reset_peak() if trace else None
    records = len(task.dataset(cfg.dataset.train_subset))
    # the start of epoch 2, as train.py's loop does it (the epoch-1 iterator counts as finished)
    sharded = task.has_sharded_data(cfg.dataset.train_subset)
    epoch_start = time.perf_counter()
    epoch_itr = trainer.get_train_iterator(2, load_dataset=sharded, disable_iterator_cache=sharded)
    if epoch_itr.next_epoch_idx != 2:  # a reused iterator: fairseq moves it on at the end of epoch 1
        epoch_itr.load_state_dict({"version": 2, "epoch": 2, "iterations_in_epoch": 0, "shuffle": True})
    second = next(epoch_itr.next_epoch_itr(fix_batches_to_gpus=False, shuffle=True))
    epoch_end = time.perf_counter()
    epoch_traced = tracemalloc.get_traced_memory() if trace else (0, 0)
    return {
        "records": records, "batches": len(epoch_itr), "first_batch_proteins": len(first["id"]),
        "epoch2_first_batch_proteins": len(second["id"]),
        "load_and_batch_s": loaded - start, "first_batch_s": first_batch - start,
        "epoch_start_s": epoch_end - epoch_start,
        "rss_peak_bytes": after["VmHWM"] - before["VmRSS"], "rss_anon_kept_bytes": after["RssAnon"] - before["RssAnon"],
        "rss_file_kept_bytes": after["RssFile"] - before["RssFile"], "baseline_rss_bytes": before["VmRSS"],
        "traced_peak_bytes": traced[1], "traced_kept_bytes": traced[0],
        "traced_epoch_start_peak_bytes": epoch_traced[1],
    }


def measure_in_subprocess(data: Path, *extra: str, max_tokens: int, max_positions: int, trace: bool) -> dict:
    """:func:`measure` in a fresh interpreter (one thread), so its peak RSS is its own."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--measure", str(data), "--max-tokens", str(max_tokens), "--max-positions",
           str(max_positions), *(["--trace"] if trace else []), "--", *extra]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if not lines or not lines[-1].startswith("{"):
        raise SystemExit(f"error: {' '.join(cmd)} failed (status {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def extrapolate(points: list[tuple[int, float]], n: int) -> float:
    """The straight line through the first and last measured (records, value) points, at ``n`` records."""
    (n1, v1), (n2, v2) = points[0], points[-1]
    return v1 + (v2 - v1) * (n - n1) / (n2 - n1)


#: (column title, result key, scale): per-protein bytes or seconds
COLUMNS = (("first batch s", "first_batch_s", 1), ("epoch start s", "epoch_start_s", 1),
           ("peak B/prot", "traced_peak_bytes", "n"), ("held B/prot", "traced_kept_bytes", "n"),
           ("epoch peak B/prot", "traced_epoch_start_peak_bytes", "n"), ("RSS peak B/prot", "rss_peak_bytes", "n"),
           ("RSS anon B/prot", "rss_anon_kept_bytes", "n"))


def table(results: dict[str, list[dict]], extrapolate_to: int) -> str:
    """The measured rows, and per mode the straight-line extrapolation to ``extrapolate_to`` records."""
    lines = [f"{'mode':<32} {'records':>11} " + " ".join(f"{title:>{len(title)}}" for title, _, _ in COLUMNS)]

    def row(mode: str, n: int, values: dict[str, float]) -> str:
        cells = [f"{values[key] / (n if scale == 'n' else 1):>{len(title)}.{1 if scale == 'n' else 2}f}"
                 for title, key, scale in COLUMNS]
        return f"{mode:<32} {n:>11,} " + " ".join(cells)

    for mode, rows in results.items():
        for r in rows:
            lines.append(row(mode, r["n"], r))
        if len(rows) > 1:
            line = {key: extrapolate([(r["n"], r[key]) for r in rows], extrapolate_to) for _, key, _ in COLUMNS}
            lines.append(row(f"{mode} EXTRAPOLATED", extrapolate_to, line)
                         + f"  (linear fit, not measured; peak {line['traced_peak_bytes'] / 2**30:.2f} GiB/rank)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/fairseq-esm-scale"))
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--max-positions", type=int, default=1024)
    parser.add_argument("--extrapolate", type=int, default=60_000_000)
    parser.add_argument("--modes", default="plain,cluster_sampling,shared_first_rank,shared_other_ranks")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per measurement; the fastest is reported")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        result = measure(args.measure, *args.extra, max_tokens=args.max_tokens, max_positions=args.max_positions,
                         trace=args.trace)
        print(json.dumps(result), flush=True)
        os._exit(0)  # skip interpreter teardown (fairseq's loader threads can abort it)

    cache = args.work / "batch-cache"
    shared = ("--batch-cache-dir", str(cache))
    # mode: (fairseq-train options, state of the node's batch directory before each measured rank starts)
    modes = {"plain": ((), None), "cluster_sampling": (("--cluster-sampling",), None),
             "shared_first_rank": (shared, "empty"), "shared_other_ranks": (shared, "filled")}
    results: dict[str, list[dict]] = {}
    for n in sorted(args.records):
        start = time.perf_counter()
        data = make_data_bin(args.work / f"n{n}", n)
        print(f"data-bin {data}: {n:,} records ready in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        for mode in args.modes.split(","):
            options = dict(max_tokens=args.max_tokens, max_positions=args.max_positions)
            extra, cache_state = modes[mode]

            def rank(trace: bool) -> dict:
                if cache_state == "empty" or (cache_state == "filled" and not any(cache.glob("*.bounds.npy"))):
                    shutil.rmtree(cache, ignore_errors=True)
                if cache_state == "filled" and not any(cache.glob("*.bounds.npy")):
                    measure_in_subprocess(data, *extra, **options, trace=False)  # the node's first rank
                return measure_in_subprocess(data, *extra, **options, trace=trace)

            runs = [rank(trace=False) for _ in range(args.repeats)]
            timed = {**runs[0], **{k: min(r[k] for r in runs) for k in runs[0] if k.endswith("_s")}}
            traced = rank(trace=True)
            results.setdefault(mode, []).append({"n": n, **timed, **{k: v for k, v in traced.items() if "traced" in k}})
            print(table({mode: results[mode][-1:]}, args.extrapolate).splitlines()[-1], file=sys.stderr)
    print(f"one rank, --max-tokens {args.max_tokens} --max-positions {args.max_positions}, OMP_NUM_THREADS=1; "
          f"times: fastest of {args.repeats} untraced run(s); B/prot = bytes per protein (peak/held: tracemalloc, "
          f"private memory); load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(table(results, args.extrapolate))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
