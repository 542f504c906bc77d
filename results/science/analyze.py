import glob, json, sys
import matplotlib; matplotlib.use("Agg")
import matplotlib.pyplot as plt
from adaptertune.experiments.elbow import elbow_table, plot_elbow
rows = []
for p in sorted(glob.glob("/tmp/sci/sweep/*/summary.json")):
    s = json.load(open(p))
    if s["status"] == "success":
        rows.append({k: s[k] for k in ("dataset", "backbone", "method", "rank", "seed", "test_acc", "train_seconds")})
for r in rows: print(r)
table = elbow_table(rows, n_boot=1000)
fig, axes = plt.subplots(1, max(len(table), 1), figsize=(5.5 * max(len(table), 1), 4), squeeze=False)
out = {}
for ax, t in zip(axes[0], table):
    if t.fit is None:
        print(t.dataset, "no fit:", t.reason); continue
    f = t.fit
    print(f"{t.dataset}: ranks {f.ranks} mean {[round(m,2) for m in f.mean_acc]} std {[round(s,2) for s in f.std_acc]} n {f.n_seeds}")
    print(f"  fit a={f.params['a']:.2f} b={f.params['b']:.3f} c={f.params['c']:.3f} noise={f.noise:.3f} elbow={f.elbow} interval={f.interval} reached={f.reached} cont={f.elbow_continuous:.2f} failed={f.n_boot_failed}")
    plot_elbow(ax, f, label=t.dataset); ax.set_title(f"{t.dataset} ({t.backbone}, 56 px)", fontsize=9); ax.legend(fontsize=8)
    out[t.dataset] = f.to_dict()
fig.tight_layout(); fig.savefig("/tmp/sci/elbow.png", dpi=120)
json.dump({"rows": rows, "fits": out}, open("/tmp/sci/elbow.json", "w"), indent=1)
