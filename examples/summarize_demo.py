"""Print the demo's result table: held-out ECE of the trained model next to the baselines."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_validate_log(path: Path) -> dict:
    """The last JSON stats line that fairseq-validate printed (``--log-format json``)."""
    stats = None
    for line in path.read_text().splitlines():
        start = line.find("{")
        if start < 0 or '"valid_ppl"' not in line and '"ppl"' not in line:
            continue
        stats = json.loads(line[start:])
    if stats is None:
        raise SystemExit(f"error: {path}: no fairseq-validate stats line found — did validation run?")
    return {k.removeprefix("valid_"): float(v) for k, v in stats.items() if k.startswith("valid_") or k in ("ppl", "loss")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--validate-log", type=Path, required=True)
    parser.add_argument("--unigram-json", type=Path, required=True)
    parser.add_argument("--arch", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    model = read_validate_log(args.validate_log)
    unigram = json.loads(args.unigram_json.read_text())
    rows = [
        (f"{args.arch} (fairseq-train, this run)", model["ppl"], model.get("accuracy")),
        ("unigram: amino-acid frequencies of train split", unigram["unigram_ece"], None),
        ("uniform over the 20 canonical amino acids", unigram["uniform_ece"], None),
    ]
    print("\nHeld-out ECE (exponentiated cross-entropy per masked token; lower is better)")
    print("| model | held-out ECE | masked accuracy % |\n|---|---|---|")
    for name, ece, acc in rows:
        print(f"| {name} | {ece:.2f} | {'' if acc is None else f'{acc:.1f}'} |")
    verdict = "below" if model["ppl"] < unigram["unigram_ece"] else "NOT below"
    print(f"\nThe trained model's ECE is {verdict} the unigram baseline's.")
    result = {"arch": args.arch, "model": model, "unigram": unigram}
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
