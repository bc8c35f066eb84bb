"""The MNIST attack x defense table of docs/mnist.md, from a finished `poisonsim sweep sweeps/mnist_matrix.toml` directory.

Each cell: attack success / clean accuracy (percent), means over the seeds. Behind STRIP, attack success is
what passes it (triggered inputs it accepts that reach the target; `attack_success_behind`), the net's own in
brackets; Neural Cleanse's cell adds in how many seeds it named the target class.

    python benchmarks/mnist_matrix_table.py results/mnist_matrix
"""

from __future__ import annotations

import sys

from poisonsim.experiments.sweep import collect

DEFENSES = ("none", "strip", "isolation", "fine-pruning", "neural-cleanse")


def cell(runs) -> str:
    success, clean = 100 * runs["attack_success_rate"].mean(), 100 * runs["clean_accuracy"].mean()
    defense = runs["defense"].iloc[0]
    if defense == "strip":
        behind = 100 * runs["defenses.strip.attack_success_behind"].mean()
        return f"{behind:.1f} ({success:.1f}) / {clean:.1f}"
    text = f"{success:.1f} / {clean:.1f}"
    if defense == "neural-cleanse":
        found = runs["defenses.neural-cleanse.target_found"].astype(bool)
        text += f"; target named {int(found.sum())}/{len(found)}"
    return text


def main(out: str) -> None:
    table, _ = collect(out)
    table = table[table["error"].isna()]
    print("| trigger | rho | " + " | ".join(DEFENSES) + " |")
    print("|---|---|" + "---|" * len(DEFENSES))
    for (trigger, rate), runs in table.groupby(["attack.trigger", "attack.rate"], sort=False):
        cells = [cell(runs[runs["defense"] == d]) if (runs["defense"] == d).any() else "-" for d in DEFENSES]
        print(f"| {trigger} | {rate:g} | " + " | ".join(cells) + " |")
    print(f"\n{len(table)} runs, seeds {sorted(table['seed'].unique().tolist())}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/mnist_matrix")
