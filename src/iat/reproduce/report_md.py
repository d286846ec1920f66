"""report.md of `iat reproduce`: our numbers in the paper's layout, beside the paper's, in markdown.

Everything here reads results.json's content only, so a report can be rewritten without the runs. The
plots it links are drawn by iat.analysis.plots.
"""

from __future__ import annotations

from pathlib import Path

from iat.analysis.norms import plot_norms
from iat.analysis.plots import plot_probe, plot_sweep, plot_tradeoff, plot_transfer, plot_whitebox
from iat.report import attack_column, format_cell, format_table, method_label
from iat.reproduce.experiment import EPS_KEYS, TRAIN_KEYS
from iat.reproduce.paper import CITATION
from iat.reproduce.tasks import AUTOATTACK_SKIPPED
from iat.rundir import files
from iat.units import format_eps

DATASET_NAMES = {"cifar10": "CIFAR-10", "svhn": "SVHN", "fashion-mnist": "Fashion-MNIST", "mnist": "MNIST",
                 "digits": "digits"}


# ------------------------------------------------------------------------------------------ cells


def fmt_paper(cell) -> str:
    """A paper cell ([mean, std], [mean, None], a number, or None for the paper's '-') as a table cell."""
    if cell is None:
        return format_cell(None)
    mean, std = cell if isinstance(cell, list) else (cell, None)
    return format_cell({"mean": mean, "std": std})


def fmt_setting(key: str, value) -> str:
    if value is None:
        return {"train_size": "all", "test_size": "all", "width": "the architecture's own"}.get(key, "—")
    if key in EPS_KEYS:
        return format_eps(value)
    if key == "eval_eps_list":
        return ", ".join(format_eps(v, "short") for v in value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def plot_title(results: dict) -> str:
    title = f"{results['experiment']}: {results['title']}"
    if results["scale"] == "smoke":
        data = DATASET_NAMES.get(results["settings"]["dataset"], results["settings"]["dataset"])
        title += f"\nSMOKE RUN on {data}: not comparable with the paper"
    return title


def label(method: str, paper: dict | None = None) -> str:
    """The paper's own row name for the method where this table of the paper has one."""
    for row in (paper or {}).get("rows", []):
        if row.get("method") == method:
            return row["label"]
    return method_label(method)


# --------------------------------------------------------------------------------------- sections


def header(results: dict) -> list[str]:
    r, s = results, results["settings"]
    lines = [f"# `iat reproduce {r['experiment']}`: {r['title']}", ""]
    if r["scale"] == "smoke":
        subs = {d["setting"]: d for d in r["substitutions"]}
        swapped = ""
        if "dataset" in subs:
            swapped = (f" **{DATASET_NAMES.get(subs['dataset']['paper'], subs['dataset']['paper'])} was replaced by "
                       f"{DATASET_NAMES.get(s['dataset'], s['dataset'])}.**")
        lines += [
            f"> **⚠ SMOKE RUN — NOT THE PAPER'S EXPERIMENT.**{swapped} Every run was shrunk to finish in minutes "
            "on a CPU (see *What was substituted* below). These numbers check that the pipeline runs end to end; "
            "they say nothing about the paper's claims and are not comparable with the paper's numbers beside "
            f"them. For the real experiment run `iat reproduce {r['experiment']}` (the default `--scale paper`) "
            "on a GPU.", ""]
    lines += [
        f"Paper: {CITATION}. Config: `{Path(r['config_file']).name}`"
        f" ({r['scale']} scale). {DATASET_NAMES.get(s['dataset'], s['dataset'])}, `{s['arch']}`"
        + (f" at width {s['width']}" if s["width"] else "")
        + f", {s['epochs']} epochs, {len(r['seeds'])} seed(s); "
        f"{len(r['trained'])} run(s) trained by this call, wall time {r['seconds'] / 60:.1f} min "
        f"(training time of all runs: {r.get('train_seconds', 0) / 60:.1f} min); torch {r['torch_version']} "
        f"on {r['device']} ({r['threads']} threads), iat {r['iat_version']}.", ""]
    return lines


def whitebox_section(results: dict, out: Path) -> list[str]:
    wb = results["ours"]["whitebox"]
    paper = results["paper"] if results["kind"] == "whitebox" else None
    attacks = list(next(iter(wb["methods"].values())))
    n, n_aa = wb["n_examples"], wb.get("autoattack", {}).get("n_examples")
    lines = ["## White-box error (%)" if results["kind"] == "whitebox" else "## Clean and white-box error (%)", "",
             f"Error in % on {'the first ' if results['settings']['test_size'] else 'all '}{n} test images; "
             f"{attack_text(attacks, wb)}. An example counts as an error if it is misclassified clean or under "
             f"attack. Ours: mean ± sample std over {len(results['seeds'])} seed(s)"
             + (" (one seed: no std)" if len(results["seeds"]) == 1 else "")
             + ("; *paper*: the paper's number." if paper else "."), ""]
    head = ["Training \\ Adversary"]
    for a in attacks:
        head += [attack_column(a, n_aa)] + (["*paper*"] if paper else [])
    rows = []
    if paper:
        for prow in paper["rows"]:
            m = prow["method"]
            ours = wb["methods"].get(m, {}) if m else {}
            name = prow["label"] if m else f"{prow['label']} *(quoted, not run)*"
            cells = [name]
            for a in attacks:
                cells += [format_cell(ours.get(a)) if m else "—",
                          "not in the paper" if a == "autoattack" else fmt_paper(prow["cells"].get(a))]
            rows.append(cells)
    else:
        for m, ours in wb["methods"].items():
            rows.append([label(m)] + [format_cell(ours[a]) for a in attacks])
    lines += [format_table(head, rows), ""]
    lines += autoattack_lines(results, wb)
    plot_whitebox(wb, paper, out / "whitebox.png", plot_title(results))
    lines += ["![white-box error, ours beside the paper's](whitebox.png)", ""]
    if results["kind"] == "whitebox":
        if plot_tradeoff(wb["methods"], out / "tradeoff.png", plot_title(results), paper=paper, autoattack_n=n_aa):
            lines += ["![clean error against robust error, ours beside the paper's](tradeoff.png)", ""]
    return lines


def autoattack_lines(results: dict, wb: dict) -> list[str]:
    """AutoAttack against PGD-20 on the same images (the paper has no AutoAttack numbers), or why it is missing."""
    aa = wb.get("autoattack")
    if aa is None:
        return [f"{AUTOATTACK_SKIPPED}.", ""] if results["settings"].get("autoattack_limit") else []
    head = ["Training", f"PGD (20 steps), first {aa['n_examples']:,}", f"AutoAttack, first {aa['n_examples']:,}",
            "change (points)"]
    rows = [[label(m)] + [format_cell(aa["same_images"][m]["pgd20"]), format_cell(cells["autoattack"]),
                          f"{cells['autoattack']['mean'] - aa['same_images'][m]['pgd20']['mean']:+.2f}"]
            for m, cells in wb["methods"].items()]
    return [f"**AutoAttack** (not in the paper: it used FGSM and PGD only): the standard version by its authors "
            f"({', '.join(aa['components'])}; {aa['package']}), eps {format_eps(aa['eps'])}, each run's seed, on "
            f"the first {aa['n_examples']:,} test images; beside it, PGD-20 on those same images.", "",
            format_table(head, rows), ""]


def attack_text(attacks: list[str], wb: dict) -> str:
    parts = []
    if "fgsm" in attacks:
        parts.append(f"FGSM with eps {format_eps(wb['eps'])}")
    steps = [a[3:] for a in attacks if a.startswith("pgd")]
    if steps:
        parts.append(f"PGD ({', '.join(steps)} steps) with eps {format_eps(wb['eps'])} and steps of "
                     f"{format_eps(wb['step_size'])}")
    return "; ".join(parts) if parts else "no attack"


def transfer_section(results: dict, out: Path) -> list[str]:
    t, paper = results["ours"]["transfer"], results["paper"]
    methods = results["methods"]
    eps_list = sorted({p["eps"] for p in t["points"]})
    cell = {(p["eps"], p["source"], p["target"]): p for p in t["points"]}
    head = ["Attack \\ Target"] + [f"ε {format_eps(e, '255')}/255: {label(m, paper)}"
                                   for e in eps_list for m in methods]
    ours = [[label(src, paper)] + [format_cell(cell.get((e, src, tgt))) for e in eps_list for tgt in methods]
            for src in methods]
    lines = ["## Transfer attacks: error (%)", "",
             f"PGD-{t['steps']} adversarial examples made on the row's model (*Attack*) and evaluated on the "
             "column's (*Target*); the diagonal is the white-box attack, which should be the strongest in its "
             f"column. Step size: {step_text(t)}. Ours: mean ± sample std over {len(results['seeds'])} seed(s), "
             f"each seed's models attacking each other.{counting_text(t)}", "", "**Ours**", "",
             format_table(head, ours), ""]
    if paper:
        prow = {r["method"]: r for r in paper["rows"]}
        pe = [str(e) for e in paper["eps_255"]]
        phead = ["Attack \\ Target"] + [f"ε {e}/255: {label(m, paper)}" for e in pe for m in methods]
        prows = [[label(src, paper)] + [fmt_paper(prow[src]["cells"][e][tgt]) for e in pe for tgt in methods]
                 for src in methods if src in prow]
        lines += ["**Paper (Table 5)**", "", format_table(phead, prows), ""]
    plot_transfer(t, paper, methods, out / "transfer.png", plot_title(results))
    lines += ["![transfer error, ours beside the paper's](transfer.png)", ""]
    return lines


def step_text(ours: dict) -> str:
    if ours.get("step_size") is not None:
        return format_eps(ours["step_size"])
    rule = ours.get("suite", {}).get("step_size_rule")
    if rule is not None:
        return f"{rule} at each eps (the robustness suite's default; the paper does not give it)"
    return "the robustness suite's default for each eps"


def counting_text(ours: dict) -> str:
    counting = ours.get("suite", {}).get("counting")
    return f" Counting: {counting}." if counting else ""


def sweep_section(results: dict, out: Path) -> list[str]:
    kind, paper, methods = results["kind"], results["paper"], results["methods"]
    sweep = results["ours"][kind.replace("-", "_")]
    axis = "eps" if kind == "sweep-eps" else "steps"
    values = sorted({p[axis] for p in sweep["points"]})
    cell = {(p["method"], p[axis]): p for p in sweep["points"]}
    name = (lambda v: format_eps(v, "255")) if axis == "eps" else str
    corner = "Attack ε (/255) \\ Model" if axis == "eps" else "Model \\ Num. Iterations"
    head = [corner] + [name(v) for v in values]
    rows = [[label(m, paper)] + [format_cell(cell.get((m, v))) for v in values] for m in methods]
    if axis == "eps":
        what = f"white-box PGD with {sweep['steps']} steps and increasing eps"
    else:
        what = f"white-box PGD at eps {format_eps(sweep['eps'])} with an increasing number of steps"
    lines = [f"## Error (%) against {what}", "",
             f"Step size: {step_text(sweep)}. Ours: mean ± sample std over {len(results['seeds'])} seed(s)."
             f"{counting_text(sweep)}", "",
             "**Ours**", "", format_table(head, rows), ""]
    if paper:
        keys = [str(k) for k in paper["eps_255" if axis == "eps" else "steps"]]
        prows = [[r["label"]] + [fmt_paper(r["cells"][k]) for k in keys] for r in paper["rows"]]
        lines += [f"**Paper ({results['experiment'].replace('table', 'Table ')})**", "",
                  format_table([corner] + keys, prows), ""]
    file = f"{kind}.png"
    plot_sweep(sweep, paper, methods, axis, out / file, plot_title(results))
    lines += [f"![error against {axis}, ours beside the paper's]({file})", ""]
    return lines


def norms_section(results: dict, out: Path) -> list[str]:
    norms = results["ours"]["norms"]
    methods = norms["methods"]
    lines = ["## Weight norms per layer (Figure 1)", "",
             "Frobenius and spectral norm (largest singular value, exact) of each weight matrix, in forward order; "
             f"mean ± sample std over {len(results['seeds'])} seed(s). Per-run values: norms.json.", "",
             "![Frobenius and spectral norms per layer](norms.png)", ""]
    layers = next(iter(methods.values()))
    head = ["layer", "shape"] + [f"{method_label(m, short=True)}: {k}"
                                 for m in methods for k in ("Frobenius", "spectral")]
    rows = []
    for i, layer in enumerate(layers):
        cells = [f"{i + 1} ({layer['layer']})", "x".join(str(d) for d in layer["shape"])]
        for m in methods:
            cells += [format_cell(methods[m][i]["frobenius"]), format_cell(methods[m][i]["spectral"])]
        rows.append(cells)
    lines += [format_table(head, rows), ""]
    if norms["claims"]:
        lines += ["**The paper's claims (Section 4.4), checked on these runs**", ""]
        lines += [f"- {'✅ holds' if c['holds'] else '❌ does not hold'}: {c['claim']} ({c['detail']})"
                  for c in norms["claims"]]
        lines.append("")
    plot_rows = {method_label(m, short=True): [{"layer": layer["layer"], "frobenius": layer["frobenius"]["mean"],
                             "spectral": layer["spectral"]["mean"], "frobenius_std": layer["frobenius"]["std"],
                             "spectral_std": layer["spectral"]["std"]} for layer in rows_]
                 for m, rows_ in methods.items()}
    plot_norms({"runs": plot_rows}, out / "norms.png", labels={k: k for k in plot_rows}, title=plot_title(results))
    return lines


def probe_section(results: dict, out: Path) -> list[str]:
    probe, paper = results["ours"]["probe"], results["paper"]
    cfg = probe["config"]
    prow = {r["method"]: r for r in (paper or {}).get("rows", [])}
    lines = ["## Random-label probe: accuracy (%) fitting random binary labels", "",
             f"The frozen penultimate representation of {cfg['n']} training images; random binary labels; a "
             f"2-layer MLP ({cfg['hidden']} hidden units, Adam lr {cfg['lr']:g}, batch {cfg['batch_size']}) "
             f"trained for {cfg['epochs']} epochs; the accuracy on those examples. Higher: a less compressed "
             f"representation. Ours: mean ± sample std over {len(results['seeds'])} seed(s). Per-run values: "
             "probe.json.",
             ""]
    head = ["Training", "examples", "feature dim", "accuracy (%)", "*paper*"]
    rows = [[label(m, paper), str(v["n_examples"]), str(v["dim"]), format_cell(v["accuracy"]),
             fmt_paper(prow[m]["accuracy"]) if m in prow else "—"] for m, v in probe["methods"].items()]
    lines += [format_table(head, rows), ""]
    plot_probe(probe, prow, out / "probe.png", plot_title(results))
    lines += ["![probe accuracy, ours beside the paper's](probe.png)", ""]
    return lines


def published_section(results: dict) -> list[str]:
    """Other papers' published numbers (src/iat/published_numbers.json) beside our row of the same method, each
    with its architecture and, below, how it was trained where that differs from ours."""
    pub = results.get("published")
    if not pub:
        return []
    wb = results["ours"].get("whitebox", {})
    ours, n_aa = wb.get("methods", {}), wb.get("autoattack", {}).get("n_examples")
    s = results["settings"]
    arch = f"`{s['arch']}`" + (f" at width {s['width']}" if s["width"] else "")
    head = ["Published (entry)", "architecture", "extra data", "clean error", "AutoAttack error",
            f"ours, {arch}: clean error", f"ours: AutoAttack error{f' (first {n_aa:,})' if n_aa else ''}"]
    rows = []
    for r in pub["rows"]:
        mine = ours.get(r["method"]) if r["method"] else None
        rows.append([f"{r['label']} ({r['entry']})", r["architecture"], "yes" if r["additional_data"] else "no",
                     f"{100 - r['clean_acc']:.2f}", f"{100 - r['autoattack_acc']:.2f}",
                     format_cell((mine or {}).get("clean")) if mine else "—",
                     format_cell((mine or {}).get("autoattack")) if mine else "—"])
    lines = [f"## Published numbers: {pub['title']}", "",
             f"Source: {pub['source']}. Error = 100 - the published accuracy, in %. Each published model is of the "
             "architecture named in its row, not necessarily ours; '—': no run of ours is that method.", "",
             format_table(head, rows), "", f"How each reference trained (ours: {s['epochs']} epochs, batch "
             f"{s['batch_size']}, lr {s['lr']:g}" + (f" times {s['lr_gamma']:g} at epochs "
                                                   f"{', '.join(str(m) for m in s['milestones'])}" if s["milestones"]
                                                   else " throughout")
             + f", PGD-{s['attack_steps']} of {format_eps(s['step_size'])} in training):", ""]
    lines += [f"- {r['entry']} ({r['architecture']}): {r['schedule']}." for r in pub["rows"]]
    lines += [f"- {n}" for n in pub.get("notes", [])] + [""]
    return lines


def settings_section(results: dict) -> list[str]:
    s = results["settings"]
    subs = {d["setting"]: d["paper"] for d in results["substitutions"]}
    keys = [k for k in TRAIN_KEYS if k in s] + ["test_size"]
    by_kind = {"transfer": ["eval_eps_list", "eval_steps", "eval_step_size"],
               "sweep-eps": ["eval_eps_list", "eval_steps", "eval_step_size"],
               "sweep-steps": ["eval_steps_list", "eval_eps", "eval_step_size"],
               "probe": ["probe_n", "probe_epochs", "probe_hidden", "probe_lr", "probe_batch_size"]}
    keys += by_kind.get(results["kind"], [])
    if s["attacks"]:
        keys += [k for k in ("attacks", "eval_eps", "eval_step_size") if k not in keys]
    lines = []
    if results["scale"] == "smoke":
        lines += ["## What was substituted (smoke scale)", "",
                  format_table(["setting", "paper", "this smoke run"],
                               [[k, fmt_setting(k, subs[k]), fmt_setting(k, s[k])] for k in subs]), ""]
    variants = [f"`{name}` = `{v['method']}` with " + ", ".join(f"{k} = {fmt_setting(k, x)}" for k, x in
                                                             v["settings"].items())
                for name, v in results.get("variants", {}).items()]
    if s.get("ema"):
        variants.append(f"`NAME+ema`: the averaged weights (`--ema {s['ema']:g}`) of NAME's own run, evaluated "
                        "beside its last weights (averaging leaves the trained weights as they are)")
    lines += ["## Settings", "", f"Methods: {', '.join(results['methods'])}; seeds {results['seeds']}. "
              "Run directories: METHOD-seedK/ beside this report."
              + (f" Variants: {'; '.join(variants)}." if variants else ""), "",
              format_table(["setting", "value"], [[k, fmt_setting(k, s[k])] for k in keys]), ""]
    return lines


def notes_section(results: dict) -> list[str]:
    notes = list(results["notes"]) + list((results["paper"] or {}).get("notes", []))
    if not notes:
        return []
    return ["## Notes and assumptions", ""] + [f"- {n}" for n in notes] + [""]


def write_report(results: dict, out: Path) -> str:
    """Write OUT/report.md (and its plots); return the report's text."""
    lines = header(results)
    kind = results["kind"]
    if kind == "transfer":
        lines += transfer_section(results, out)
    elif kind in ("sweep-eps", "sweep-steps"):
        lines += sweep_section(results, out)
    elif kind == "norms":
        lines += norms_section(results, out)
    elif kind == "probe":
        lines += probe_section(results, out)
    if "whitebox" in results["ours"]:
        lines += whitebox_section(results, out)
    lines += published_section(results) + settings_section(results) + notes_section(results)
    text = "\n".join(lines)
    files.atomic_write_bytes(out / "report.md", text.encode())
    return text
