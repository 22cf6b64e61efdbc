#!/usr/bin/env python3
"""Generates docs/results.md: edgeq's calibration methods against llama.cpp's goldens on tl-8m.

For Q4_K_M, Q3_K_M, Q2_K, Q4_0 and IQ4_XS: bits per weight, file size, PPL, mean KLD and same-top-token %
for llama.cpp's goldens (plain and imatrix, ../shared/golden) and for `edgeq quantize --method`
rtn, imatrix, awq, gptq and auto (written with --no-edgeq-metadata, so the sizes compare with llama-quantize's);
PAL4 and PAL3 (edgeq's k-means look-up tables, rtn and imatrix) with their true bpw, tables included.

Table 1: calibration on all of ../shared/text/calib.txt, evaluation on ../shared/text/tinystories-heldout.txt
         (n_ctx 256, KLD against the F32 conversion) - the protocol of issue 10.
Table 2: calibration on the first half of calib.txt only, evaluation on all of its second half (the complement).
         calib.txt is ordered by domain: its first half is prose (TinyStories, the Bible, fortunes), its second
         Linux kernel C code and docs and Python docs, so table 2 is a domain shift - the hard case for a method
         fitted to its calibration text. llama.cpp's imatrix golden was computed on all of calib.txt, so for it
         table 2 is in-sample.

Every number comes from running the edgeq binary (perplexity --kld); nothing is hard-coded.
Usage: scripts/results.py [--edgeq build/cli/edgeq] [--work /tmp/edgeq-results] [--threads 2]
                          [--types Q4_K_M,...] [--chunks2 N] [--out docs/results.md]
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
TYPES = ["Q4_K_M", "Q3_K_M", "Q2_K", "Q4_0", "IQ4_XS"]
METHODS = ["rtn", "imatrix", "awq", "gptq", "auto"]
# Palettized types (edgeq only; bpw includes the look-up tables): the k-means is weighted by the imatrix or not.
PAL_TYPES = ["PAL4", "PAL3"]
PAL_METHODS = ["rtn", "imatrix"]
# Issue 10's targets: best edgeq KLD <= factor x llama.cpp's imatrix golden.
TARGETS = {"Q4_K_M": 0.9, "IQ4_XS": 0.9, "Q3_K_M": 0.8, "Q2_K": 0.8}


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, EDGEQ_PROGRESS="0"), **kw)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--edgeq", default=os.path.join(ROOT, "build", "cli", "edgeq"))
    ap.add_argument("--work", default="/tmp/edgeq-results")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--pal-types", default=",".join(PAL_TYPES))
    ap.add_argument("--chunks2", default=None, help="evaluation chunks of table 2's text (default: all)")
    ap.add_argument("--no-table2", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "results.md"))
    a = ap.parse_args()
    E, W, T = a.edgeq, a.work, a.threads
    os.makedirs(W, exist_ok=True)
    t0 = time.time()

    def p(*x):
        print(f"[{time.time() - t0:7.1f} s]", *x, file=sys.stderr, flush=True)

    f32 = os.path.join(W, "tl-8m-f32.gguf")
    if not os.path.exists(f32):
        run([E, "convert", os.path.join(SHARED, "models", "tl-8m"), "--outtype", "f32", "-o", f32])
    heldout = os.path.join(SHARED, "text", "tinystories-heldout.txt")
    calib = os.path.join(SHARED, "text", "calib.txt")
    # Table 2's texts: calib.txt split at the line boundary nearest its middle.
    text = open(calib, "rb").read()
    cut = text.index(b"\n", len(text) // 2) + 1
    calib_a, calib_b = os.path.join(W, "calib-first-half.txt"), os.path.join(W, "calib-second-half.txt")
    open(calib_a, "wb").write(text[:cut])
    open(calib_b, "wb").write(text[cut:])

    setups = [("1", calib, heldout, None)]
    if not a.no_table2:
        setups.append(("2", calib_a, calib_b, a.chunks2))
    results = {}
    for tag, cal_text, eval_text, chunks in setups:
        base = os.path.join(W, f"base{tag}.kld")
        ev_opts = ["--chunks", chunks] if chunks else []
        if not os.path.exists(base):
            p(f"table {tag}: reference log-probs")
            run([E, "perplexity", f32, "-f", eval_text, "--kld-base", base, "-t", T] + ev_opts)
        stats = os.path.join(W, f"stats{tag}.gguf")
        if not os.path.exists(stats):
            p(f"table {tag}: calibrate on {os.path.basename(cal_text)}")
            run([E, "calibrate", f32, "--data", cal_text, "-o", stats, "--hessian", "-t", T])

        def evaluate(model):
            cache = os.path.join(W, f"eval{tag}-" + os.path.basename(model) + ".json")
            if os.path.exists(cache):  # a previous run's measurement of the same file (resumable runs)
                return json.load(open(cache))
            d = json.loads(run([E, "perplexity", model, "-f", eval_text, "--kld", base, "-t", T, "--json"] + ev_opts))
            info = json.loads(run([E, "inspect", model, "--json"]))
            r = {"ppl": d["ppl"], "kld": d["kld"]["mean_kld"], "top": d["kld"]["same_top_p_pct"],
                 "bpw": info["bits_per_weight"], "size": info["file_size"]}
            json.dump(r, open(cache, "w"))
            return r

        for ty in all_types(a):
            rows = {}
            for kind, name in (("llama.cpp", f"tl-8m-{ty}.gguf"), ("llama.cpp imatrix", f"tl-8m-{ty}-imat.gguf")):
                g = os.path.join(SHARED, "golden", name)
                if os.path.exists(g):
                    p(f"table {tag}: {ty} {kind}")
                    rows[kind] = evaluate(g)
            for m in PAL_METHODS if ty in a.pal_types.split(",") else METHODS:
                out = os.path.join(W, f"t{tag}-{ty}-{m}.gguf")
                p(f"table {tag}: {ty} edgeq {m}")
                cmd = [E, "quantize", f32, "-o", out, "-t", ty, "--method", m, "--threads", T, "--no-edgeq-metadata"]
                if m != "rtn":
                    cmd += ["--calib", stats]
                if not os.path.exists(out):  # outputs appear only when complete
                    run(cmd)
                rows["edgeq " + m] = evaluate(out)
            results[(tag, ty)] = rows
            write_md(a, results)

    write_md(a, results)
    p("wrote", a.out)


def all_types(a):
    return [t for t in a.types.split(",") + a.pal_types.split(",") if t]


def write_md(a, results):
    golden_ppl = json.load(open(os.path.join(SHARED, "golden", "perplexity.json")))
    with open(a.out, "w") as f:
        f.write("# Calibration results (tl-8m)\n\n")
        f.write("Generated by `scripts/results.py` (do not edit by hand). Model: tl-8m (8.4M parameters), "
                "n_ctx 256, KLD against the F32 conversion, all numbers from `edgeq perplexity --kld` "
                "(llama-perplexity's protocol). edgeq files are written with `--no-edgeq-metadata`, so their sizes "
                "compare with llama-quantize's. bpw: tensor data bits per parameter.\n\n")
        f.write("The other result pages: [results-iq.md](results-iq.md) (the i-quants, `scripts/results_iq.py`), "
                "[results_arch.md](results_arch.md) (other architectures against llama.cpp, "
                "`bench/arch_llama_agreement.sh`); the budget tables below, when present, come from "
                "`bench/budget_results.py`.\n\n")
        for tag, title in (("1", "Table 1: calibration on calib.txt, evaluation on tinystories-heldout.txt "
                                  "(120 chunks)"),
                           ("2", "Table 2: calibration on the first half of calib.txt (prose: TinyStories, Bible, fortunes), "
                                 f"evaluation on {'all' if a.chunks2 is None else a.chunks2 + ' chunks'} of its second "
                                 "half (Linux kernel C and docs, Python docs): a domain shift; the llama.cpp imatrix "
                                 "golden saw all of calib.txt")):
            if not any(k[0] == tag for k in results):
                continue
            f.write(f"## {title}\n\n")
            f.write("| type | method | bpw | file size | PPL | mean KLD | same top % | KLD / golden imatrix |\n")
            f.write("|---|---|---:|---:|---:|---:|---:|---:|\n")
            for ty in all_types(a):
                rows = results.get((tag, ty))
                if not rows:
                    continue
                ref = rows.get("llama.cpp imatrix", {}).get("kld")
                for name, r in rows.items():
                    ratio = f"{r['kld'] / ref:.3f}" if ref else "-"
                    f.write(f"| {ty} | {name} | {r['bpw']:.3f} | {r['size']} | {r['ppl']:.4f} | {r['kld']:.6f} | "
                            f"{r['top']:.2f} | {ratio} |\n")
            f.write("\n")
            if tag == "1":
                f.write("Targets of issue 10 (best edgeq method vs llama.cpp's imatrix golden, same file size ±0.5%):\n\n")
                f.write("| type | golden imatrix KLD | best edgeq | its KLD | ratio | target | met | size vs golden |\n")
                f.write("|---|---:|---|---:|---:|---:|---|---:|\n")
                for ty, factor in TARGETS.items():
                    rows = results.get((tag, ty))
                    if not rows or "llama.cpp imatrix" not in rows:
                        continue
                    g = rows["llama.cpp imatrix"]
                    best = min((k for k in rows if k.startswith("edgeq")), key=lambda k: rows[k]["kld"])
                    b = rows[best]
                    ratio = b["kld"] / g["kld"]
                    dsize = (b["size"] / g["size"] - 1) * 100
                    met = "yes" if ratio <= factor and abs(dsize) <= 0.5 else "no"
                    f.write(f"| {ty} | {g['kld']:.6f} | {best} | {b['kld']:.6f} | {ratio:.3f} | {factor} | {met} | "
                            f"{dsize:+.2f}% |\n")
                f.write("\n")
            f.write("`auto` against `rtn` (auto must never be worse):\n\n")
            for ty in a.types.split(","):
                rows = results.get((tag, ty))
                if rows and "edgeq auto" in rows:
                    au, rt = rows["edgeq auto"]["kld"], rows["edgeq rtn"]["kld"]
                    f.write(f"- {ty}: auto {au:.6f} vs rtn {rt:.6f} ({au / rt:.3f}x)\n")
            f.write("\n")
        f.write("llama.cpp's own KLD for its goldens under table 1's protocol (golden/perplexity.json, "
                "llama-perplexity AVX2 build), to check the table's golden rows: ")
        files = golden_ppl.get("files", {})
        f.write(", ".join(f"{k} {files[k]['mean_kld']:.6f}" for t in a.types.split(",")
                          for k in (f"tl-8m-{t}", f"tl-8m-{t}-imat") if k in files and "mean_kld" in files[k]))
        f.write(".\n")


if __name__ == "__main__":
    main()
