"""The closing hook's figures: the compute frontier with the recommendation, and the isoFLOP view.

`frontier_figure`: loss against compute for every run used, the fitted law's compute-optimal frontier
L_opt(C) from the smallest run to past the recommendation, and the recommended run with its loss interval.
`isoflop_figure`: loss against N for runs grouped by compute (Hoffmann et al. 2022, Figure 3), with the law's
prediction along each group's isoFLOP curve C = 6 N D and each group's minimum.

Both only draw: the curves come in the recommendation (`rec["figures"]`, made by
`planner.recommendation.figure_data` from the law form itself), so any registered law form is drawn correctly.
"""

from __future__ import annotations

import numpy as np

from lightning_scaling.schedules.flops import training_compute


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def frontier_figure(rec: dict, path) -> str:
    plt = _pyplot()
    used = rec["runs"]["used"]
    # The law's compute is C = 6ND (the frontier and the recommendation are on that axis), so the runs are placed
    # at 6ND too, not at their measured FLOPs: for small models attention and the embeddings make the measured count
    # larger, which would put every run to the right of the frontier it was fitted with.
    C = np.array([r.get("compute_6nd", training_compute(r["params"], r["tokens"])) for r in used], float)
    L = np.array([r["loss"] for r in used], float)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sparse = np.array([bool(r.get("sparsity")) for r in used])
    ax.scatter(C[~sparse], L[~sparse], s=22, color="#1f77b4", label="runs (dense)", zorder=3)
    if sparse.any():
        ax.scatter(C[sparse], L[sparse], s=26, marker="D", color="#9467bd", label="runs (sparse, N_avg)", zorder=3)
    frontier = rec["figures"]["frontier"]
    ax.plot(frontier["flops"], frontier["loss"], color="#2ca02c", lw=1.6, label="fitted compute-optimal frontier")
    if "E" in rec:
        ax.axhline(rec["E"], color="#7f7f7f", lw=0.8, ls=":", label=f"E = {rec['E']:.3g} (irreducible)")
    if rec.get("status") == "ok":
        yerr = None
        if "loss_low" in rec:
            # a calibrated interval may sit off the point estimate (one side shifted): draw what lies on each side
            yerr = [[max(0.0, rec["loss"] - rec["loss_low"])], [max(0.0, rec["loss_high"] - rec["loss"])]]
        ax.errorbar([rec["flops"]], [rec["loss"]], yerr=yerr, fmt="*", ms=13, color="#d62728", capsize=4,
                    label="recommended next run", zorder=4)
    ax.set_xscale("log")
    ax.set_xlabel("compute C = 6ND (FLOPs)")
    ax.set_ylabel("loss")
    ax.set_title("Scaling law: loss against compute" if rec.get("status") == "ok"
                 else "Scaling law as fitted (degenerate: no recommendation)")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def isoflop_figure(rec: dict, path) -> str:
    plt = _pyplot()
    used = rec["runs"]["used"]
    N = np.array([r["params"] for r in used], float)
    L = np.array([r["loss"] for r in used], float)
    groups = rec["figures"]["isoflop"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = plt.cm.viridis(np.linspace(0.1, 0.9, max(len(groups), 1)))
    for color, group in zip(colors, groups):
        members = group["members"]  # indices into the runs used
        ax.scatter(N[members], L[members], color=color, s=22, zorder=3)
        ax.plot(group["params"], group["loss"], color=color, lw=1.2, label=f"C = {group['flops']:.2g}")
        if np.isfinite(group["params_opt"]) and group["params_opt"] > 0:
            ax.plot([group["params_opt"]], [group["loss_opt"]], marker="v", color=color, ms=7)
    if rec.get("status") == "ok":
        ax.plot([rec["params"]], [rec["loss"]], marker="*", ms=13, color="#d62728", ls="none",
                label=f"next: C = {rec['flops']:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("parameters N" + (" (N_avg)" if rec.get("params_column") == "params_avg" else ""))
    ax.set_ylabel("loss")
    ax.set_title("isoFLOP view: law along C = 6ND (triangles: optima)")
    ax.legend(fontsize=7, frameon=False, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
