"""``fairseq-esm-contacts``: unsupervised contact maps from attention (Rao et al. 2020).

``predict`` writes each protein's contact map as ``<id>.npy`` and ``<id>.png``; ``fit`` fits the
layers x heads logistic regression on structures and saves it (optionally a checkpoint that carries
it); ``evaluate`` prints precision at L, L/2, L/5 by separation range against structures and, with
``--png-dir``, draws each structure's predicted map over its true one.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from fairseq_esm.cli.common import (
    UsageError,
    add_model_args,
    add_out,
    add_positional_out,
    apply_threads,
    load_inference_model,
    out_or_positional,
    run_main,
)
from fairseq_esm.inference.choices import DEFAULT_C, MIN_SEPARATION
from fairseq_esm.io.fasta import FastaReport, add_policy_args, policy_from_args, read_fasta
from fairseq_esm.io.file_names import file_stems
from fairseq_esm.io.structures import ChainStructure, load_chain, parse_spec
from fairseq_esm.modules.contact_metrics import contact_precisions, mean_precisions

if TYPE_CHECKING:
    from fairseq_esm.modules.alphabet import Alphabet
    from fairseq_esm.modules.esm1 import ESM1

# fairseq (wav2vec2_classification) sets the root logger to DEBUG on import: keep matplotlib's font search quiet
for _noisy in ("matplotlib", "PIL"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

STRUCTURES_HELP = "PDB or mmCIF files (gzip fine); FILE:CHAIN picks a chain of that file"


def build_parser() -> argparse.ArgumentParser:
    """The three subcommands and their options."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-contacts", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="{predict,fit,evaluate}")
    predict = commands.add_parser("predict", help="contact maps of FASTA proteins (.npy + .png)")
    add_model_args(predict, max_tokens=2048)
    predict.add_argument("fasta", help="proteins to predict (FASTA, gzip fine)")
    add_positional_out(predict, "outdir")
    add_out(predict, required=False, metavar="DIR",
            help="directory to write: <id>.npy (L x L float32), <id>.png, contacts.tsv (index)")
    predict.add_argument("--regression", help="contact regression from `fit` (default: the checkpoint's own)")
    predict.add_argument("--no-png", action="store_true", help="write only the .npy arrays")
    add_policy_args(predict)
    fit = commands.add_parser("fit", help="fit the contact regression on structures")
    add_model_args(fit, max_tokens=2048)
    fit.add_argument("structures", nargs="+", help=STRUCTURES_HELP)
    add_out(fit, metavar="FILE", help="regression file to write (fair-esm's -contact-regression.pt layout)")
    fit.add_argument("--C", type=float, default=DEFAULT_C, help="inverse L1 strength (default %(default)s)")
    fit.add_argument("--min-separation", type=int, default=MIN_SEPARATION,
                     help="fit on pairs at least this far apart in sequence (default %(default)s)")
    fit.add_argument("--write-checkpoint", metavar="NEW.pt",
                     help="also write the model with this regression in fair-esm's layout (+ its sibling)")
    evaluate = commands.add_parser("evaluate", help="precision at L, L/2, L/5 against structures")
    add_model_args(evaluate, max_tokens=2048)
    evaluate.add_argument("structures", nargs="+", help=STRUCTURES_HELP)
    evaluate.add_argument("--regression", help="contact regression from `fit` (default: the checkpoint's own)")
    add_out(evaluate, required=False, metavar="TABLE.tsv", help="file to also write the printed table to")
    evaluate.add_argument("--png-dir", metavar="DIR",
                          help="write <structure>.png per structure: predicted (upper) over true contacts (lower)")
    for sub in (fit, evaluate):
        sub.add_argument("--chain", help="chain id for files given without :CHAIN (default: first protein chain)")
    return parser


def load_contact_model(args: argparse.Namespace, uses_regression: bool) -> tuple[ESM1, Alphabet]:
    """Model and alphabet; installs ``--regression``; warns when contacts would be uncalibrated."""
    from fairseq_esm.inference.contacts import install_regression, load_regression, regression_is_fitted

    model, alphabet = load_inference_model(args)
    regression = getattr(args, "regression", None)
    if regression:
        fitted = load_regression(regression, args.allow_unsafe)
        install_regression(model, fitted.coef, fitted.intercept)
    elif uses_regression and not regression_is_fitted(model):
        print(f"warning: {args.checkpoint} has no fitted contact regression (fairseq-train never fits it): "
              "contacts are uncalibrated and close to random; run `fairseq-esm-contacts fit` on structures "
              "and pass --regression", file=sys.stderr)
    return model, alphabet


def load_chains(specs: Sequence[str], default_chain: Optional[str], budget: int) -> list[ChainStructure]:
    """Structures as chains, each summarised on stderr; chains longer than the model's context are skipped."""
    chains = []
    for spec in specs:
        path, chain_id = parse_spec(spec)
        chain = load_chain(path, chain_id or default_chain)
        print(chain.summary(), file=sys.stderr)
        if len(chain.sequence) > budget:
            print(f"skipped {chain.name}: {len(chain.sequence)} residues, the model takes at most {budget}",
                  file=sys.stderr)
        elif chain.resolved.sum() < 2:
            print(f"skipped {chain.name}: fewer than 2 residues with coordinates", file=sys.stderr)
        else:
            chains.append(chain)
    if not chains:
        raise UsageError("no structure left to use (see the lines above)")
    return chains


def precision_table(chains: Sequence[ChainStructure], maps: Sequence[np.ndarray]) -> list[str]:
    """TSV lines: header, one row per chain, then the mean over chains."""
    rows = [contact_precisions(probs, chain.contacts(), chain.resolved) for chain, probs in zip(chains, maps)]
    keys = list(rows[0])
    lines = ["\t".join(["structure", "length", "resolved", *keys])]
    for chain, row in zip(chains, rows):
        cells = [chain.name, str(len(chain.sequence)), str(int(chain.resolved.sum()))]
        lines.append("\t".join(cells + [f"{row[k]:.3f}" for k in keys]))
    mean = mean_precisions(rows)
    lines.append("\t".join([f"mean ({len(rows)})", "", ""] + [f"{mean[k]:.3f}" for k in keys]))
    return lines


def run_fit(args: argparse.Namespace) -> int:
    """``fit``: the regression on the structures' attention features; its training-set precision."""
    from fairseq_esm.checkpoints import load_model
    from fairseq_esm.checkpoints.pt_files import export_official, official_name_problem
    from fairseq_esm.inference.contacts import (
        attention_features,
        fit_pairs,
        install_regression,
        pair_samples,
        predict_batch,
        save_regression,
    )
    from fairseq_esm.modules.batching import residue_budget

    model, alphabet = load_contact_model(args, uses_regression=False)
    # fair-esm picks its loader from the file name (ESM-2 files start with esm2): refuse a misread name now,
    # not after the fit
    problem = args.write_checkpoint and official_name_problem(model.generation, Path(args.write_checkpoint))
    if problem:
        raise UsageError(f"--write-checkpoint {args.write_checkpoint}: fair-esm reads the file name of a "
                         f"{model.generation.name} model; {problem}")
    chains = load_chains(args.structures, args.chain, residue_budget(model.max_positions(), alphabet))
    rows = [pair_samples(attention_features(model, alphabet, c.sequence), c.contacts(), c.resolved,
                         args.min_separation) for c in chains]
    try:
        regression = fit_pairs(np.concatenate([x for x, _ in rows]), np.concatenate([y for _, y in rows]), args.C)
    except ValueError as err:
        raise UsageError(str(err)) from err
    regression.info.update(min_separation=args.min_separation, structures=[c.name for c in chains],
                           checkpoint=str(args.checkpoint))
    save_regression(args.out, regression)
    install_regression(model, regression.coef, regression.intercept)
    info = regression.info
    print(f"fitted on {len(chains)} chains, {info['pairs']:,} pairs ({info['contacts']:,} contacts); "
          f"{info['nonzero_weights']} of {info['features']} head weights non-zero; wrote {args.out}")
    maps = predict_batch(model, alphabet, [c.sequence for c in chains], args.max_tokens)
    print("training-set precision (optimistic: fitted on these chains):")
    print("\n".join(precision_table(chains, maps)))
    if args.write_checkpoint:  # the stored weights, not the --bf16/--int8 copy the fit ran on
        full, _ = load_model(args.checkpoint, "cpu", args.allow_unsafe)
        install_regression(full, regression.coef, regression.intercept)
        written = export_official(full, args.write_checkpoint)
        print("wrote " + " and ".join(str(p) for p in written))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """``evaluate``: precision table against structures, optionally figures."""
    from fairseq_esm.inference.contacts import predict_batch
    from fairseq_esm.modules.batching import residue_budget

    model, alphabet = load_contact_model(args, uses_regression=True)
    chains = load_chains(args.structures, args.chain, residue_budget(model.max_positions(), alphabet))
    maps = predict_batch(model, alphabet, [c.sequence for c in chains], args.max_tokens)
    lines = precision_table(chains, maps)
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    if args.png_dir:
        write_figures(chains, maps, Path(args.png_dir))
    return 0


def write_figures(chains: Sequence[ChainStructure], maps: Sequence[np.ndarray], outdir: Path) -> None:
    """One "predicted over true" PNG per chain, named after the chain (``1LCD_A.png``)."""
    from fairseq_esm.evaluation.contact_figure import contact_figure, save_contact_png

    outdir.mkdir(parents=True, exist_ok=True)
    for chain, probs, stem in zip(chains, maps, file_stems([c.name for c in chains])):
        save_contact_png(contact_figure(probs, chain.contacts(), chain.resolved), outdir / f"{stem}.png", chain.name)
    print(f"wrote {len(chains)} contact-map PNGs to {outdir}", file=sys.stderr)


def save_png(probs: np.ndarray, path: Path, title: str) -> None:
    """Heatmap of a contact map, axes in residue numbers (1-based), colour scale fixed to [0, 1]; the file
    appears whole (temp file + rename)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 4.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    size = len(probs)
    image = axes.imshow(probs, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest",
                        extent=(0.5, size + 0.5, size + 0.5, 0.5))
    axes.set_xlabel("residue")
    axes.set_ylabel("residue")
    axes.set_title(title if len(title) <= 60 else title[:57] + "...", fontsize=9)
    figure.colorbar(image, ax=axes, label="contact probability")
    _atomic_write(path, lambda handle: figure.savefig(handle, format="png"))


def _atomic_write(path: Path, write) -> None:
    """``write(open binary file)`` into ``path.tmp``, then rename: a killed run never leaves a torn file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        write(handle)
    os.replace(tmp, path)


INDEX_COLUMNS = ["id", "file", "length"]


def earlier_rows(outdir: Path, ids: set[str]) -> list[list[str]]:
    """Rows of an earlier run's ``contacts.tsv`` to keep: proteins this run does not redo, whose map is there."""
    path = outdir / "contacts.tsv"
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text[: text.rfind("\n") + 1].splitlines()  # a line without its newline was torn by a kill
    rows = [line.split("\t") for line in lines[1:]] if lines and lines[0].split("\t") == INDEX_COLUMNS else []
    return [row for row in rows if len(row) == 3 and row[0] not in ids and (outdir / row[1]).is_file()]


def run_predict(args: argparse.Namespace) -> int:
    """``predict``: a contact map per FASTA protein (.npy, .png) and an index, in --out. Each map is saved as
    soon as its batch is computed and listed in ``contacts.tsv`` (one flushed line per protein), so a killed
    run keeps every map it finished, indexed; the finished index is rewritten in FASTA order. Rows of an earlier
    run into the same directory stay listed (their names are not reused) unless this run redoes their ids."""
    from fairseq_esm.inference.contacts import iter_predictions
    from fairseq_esm.modules.batching import residue_budget

    outdir = Path(out_or_positional(args, "outdir", "output directory"))
    model, alphabet = load_contact_model(args, uses_regression=True)
    budget = residue_budget(model.max_positions(), alphabet)
    policy = policy_from_args(args)
    policy = replace(policy, max_length=min(policy.max_length or budget, budget))
    report = FastaReport()
    records = list(read_fasta(args.fasta, policy, report))
    print(report.format(), file=sys.stderr)
    if report.skipped.get("too_long"):
        print(f"note: proteins longer than {policy.max_length} residues are skipped (too_long): the model's "
              f"context is {model.max_positions()} tokens with <cls>/<eos>", file=sys.stderr)
    if not records:
        raise UsageError(f"{args.fasta}: no protein left to predict (see the report above)")
    outdir.mkdir(parents=True, exist_ok=True)
    kept = earlier_rows(outdir, {rid for rid, _ in records})
    stems = file_stems([rid for rid, _ in records], taken=[Path(row[1]).stem for row in kept])
    index_path = outdir / "contacts.tsv"

    def write_index(rows: Sequence[Sequence[str]]) -> None:
        _atomic_write(index_path, lambda f: f.write("".join("\t".join(r) + "\n" for r in rows).encode("utf-8")))

    write_index([INDEX_COLUMNS, *kept])
    rows: dict[int, list[str]] = {}
    with open(index_path, "a", encoding="utf-8") as index:
        for position, probs in iter_predictions(model, alphabet, [seq for _, seq in records], args.max_tokens):
            (record_id, sequence), stem = records[position], stems[position]
            _atomic_write(outdir / f"{stem}.npy", lambda f: np.save(f, probs.astype(np.float32)))
            if not args.no_png:
                save_png(probs, outdir / f"{stem}.png", record_id)
            rows[position] = [record_id, f"{stem}.npy", str(len(sequence))]
            index.write("\t".join(rows[position]) + "\n")
            index.flush()
    write_index([INDEX_COLUMNS, *kept, *(rows[i] for i in sorted(rows))])
    print(f"wrote {len(records)} contact maps to {outdir}")
    if kept:
        print(f"note: {outdir / 'contacts.tsv'} also lists {len(kept)} map(s) of an earlier run (proteins not in "
              f"{args.fasta})", file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the chosen subcommand."""
    args = build_parser().parse_args(argv)
    apply_threads(args)
    commands = {"predict": run_predict, "fit": run_fit, "evaluate": run_evaluate}
    return commands[args.command](args)


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
