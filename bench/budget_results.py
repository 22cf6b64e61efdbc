#!/usr/bin/env python3
"""docs/results.md's budget tables (issue 22) on tl-8m, regenerated from scratch.

At the byte sizes of llama.cpp's Q2_K, Q3_K_M and Q4_K_M imatrix goldens (../shared/golden/mixes.json):
  - the budget file: `edgeq quantize --target-size SIZE --data CALIB` (gptq, default candidate types,
    --budget-chunks N) with its predicted KLD,
  - edgeq's best fixed mix of that size: the same llama.cpp mix by `--method auto` (env METHODS=auto,gptq: the
    lower KLD of both), from one `edgeq calibrate --hessian` of CALIB,
  - llama.cpp's imatrix golden,
each measured by llama.cpp's own llama-perplexity (--kl-divergence against the F32 conversion's
--kl-divergence-base, n_ctx 256; docs/PROTOCOL.md).
Table 1: calibration on all of calib.txt, evaluation on all 120 chunks of tinystories-heldout.txt.
Table 2 (domain shift, docs/results.md's table 2 protocol): calibration on the first half of calib.txt, evaluation
on its second half.
Also the cost: one `quantize --method auto --data calib.txt` (Q4_K_M) against the budget search with an empty cache.

llama.cpp is found through $LLAMA_CPP_BIN (the directory holding llama-perplexity); without it the script says so
and exits 0 (nothing measured). Writes the section between the budget markers of docs/results.md (or --out).
Usage: bench/budget_results.py [--edgeq build/cli/edgeq] [--work DIR] [--threads 2] [--budget-chunks N]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
TYPES = ["Q2_K", "Q3_K_M", "Q4_K_M"]
# edgeq's fixed mix: the lowest KLD of these methods (docs/results.md: auto is the best or within 1% of gptq at
# these mixes; METHODS=auto,gptq measures both)
METHODS = os.environ.get("METHODS", "auto").split(",")
BEGIN, END = "<!-- budget tables: bench/budget_results.py -->", "<!-- end of budget tables -->"


class Missing(Exception):
    """--report-only: a measurement this row needs has not been made yet."""


REPORT_ONLY = False


def run(cmd, env=None):
    if REPORT_ONLY:
        raise Missing(" ".join(cmd))
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return r.stdout + r.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--edgeq", default=os.path.join(ROOT, "build", "cli", "edgeq"))
    ap.add_argument("--work", default="/tmp/edgeq-budget-results")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--budget-chunks", default=None, help="--budget-chunks of the budget (default: edgeq's)")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "results.md"))
    ap.add_argument("--report-only", action="store_true",
                    help="write the tables from the measurements already in --work (rows missing one are left out)")
    a = ap.parse_args()
    global REPORT_ONLY
    REPORT_ONLY = a.report_only
    llama = os.environ.get("LLAMA_CPP_BIN", "")
    ppl_bin = os.path.join(llama, "llama-perplexity")
    if not llama or not os.access(ppl_bin, os.X_OK):
        print("budget_results: set LLAMA_CPP_BIN to the directory of llama.cpp's llama-perplexity; skipped")
        return 0
    E, T, W = a.edgeq, a.threads, a.work
    os.makedirs(W, exist_ok=True)
    t0 = time.time()

    def p(*x):
        print(f"[{time.time() - t0:7.1f} s]", *x, file=sys.stderr, flush=True)

    env = dict(os.environ, EDGEQ_PROGRESS="0")
    f32 = os.path.join(W, "tl-8m-f32.gguf")
    if not os.path.exists(f32):
        run([E, "convert", os.path.join(SHARED, "models", "tl-8m"), "--outtype", "f32", "-o", f32])
    heldout = os.path.join(SHARED, "text", "tinystories-heldout.txt")
    calib = os.path.join(SHARED, "text", "calib.txt")
    text = open(calib, "rb").read()  # table 2's texts, split as scripts/results.py splits them
    cut = text.index(b"\n", len(text) // 2) + 1
    calib_a, calib_b = os.path.join(W, "calib-first-half.txt"), os.path.join(W, "calib-second-half.txt")
    open(calib_a, "wb").write(text[:cut])
    open(calib_b, "wb").write(text[cut:])

    def golden_size(ty):  # the byte size of llama.cpp's imatrix golden
        return os.path.getsize(os.path.join(SHARED, "golden", f"tl-8m-{ty}-imat.gguf"))

    def llama_kld(model, base, eval_text):
        cache = os.path.join(W, ("golden-" if not model.startswith(W) else "") + os.path.basename(model) +
                             f".{os.path.basename(base)}.json")  # never beside a golden (../shared is read-only)
        if os.path.exists(cache):
            return json.load(open(cache))
        out = run([ppl_bin, "-m", model, "-f", eval_text, "-c", "256", "-t", T, "--kl-divergence-base", base,
                   "--kl-divergence"])
        m = re.search(r"Mean\s+KLD:\s+([-0-9.e]+)", out)
        if not m:
            sys.exit(f"no 'Mean KLD' in llama-perplexity's output for {model}")
        r = {"kld": float(m.group(1)), "size": os.path.getsize(model)}
        json.dump(r, open(cache, "w"))
        return r

    budget_flags = ["--budget-chunks", a.budget_chunks] if a.budget_chunks else []
    results, cost = {}, {}
    for tag, cal_text, eval_text in (("1", calib, heldout), ("2", calib_a, calib_b)):
        base = os.path.join(W, f"llama-base{tag}.kld")
        if REPORT_ONLY and not os.path.exists(base):
            continue
        if not os.path.exists(base):
            p(f"table {tag}: llama-perplexity base of the F32 conversion")
            run([ppl_bin, "-m", f32, "-f", eval_text, "-c", "256", "-t", T, "--kl-divergence-base", base])
        stats = os.path.join(W, f"stats{tag}.gguf")
        if not os.path.exists(stats) and not REPORT_ONLY:
            p(f"table {tag}: calibrate")
            run([E, "calibrate", f32, "--data", cal_text, "-o", stats, "--hessian", "-t", T], env)
        cache = os.path.join(W, f"cache{tag}-{a.budget_chunks or 'default'}")
        for ty in TYPES:
          try:
              size = golden_size(ty)
              row = {"size_target": size}
              g = os.path.join(SHARED, "golden", f"tl-8m-{ty}-imat.gguf")
              row["golden"] = llama_kld(g, base, eval_text)
              best = None
              for m in METHODS:
                  out = os.path.join(W, f"t{tag}-{ty}-{m}.gguf")
                  if not os.path.exists(out):
                      p(f"table {tag}: {ty} {m}")
                      run([E, "quantize", f32, "-o", out, "-t", ty, "--method", m, "--calib", stats, "--threads", T,
                           "--no-edgeq-metadata"], env)
                  r = llama_kld(out, base, eval_text)
                  r["method"] = m
                  if best is None or r["kld"] < best["kld"]:
                      best = r
              row["fixed"] = best
              out = os.path.join(W, f"t{tag}-budget-{size}-{a.budget_chunks or 'default'}.gguf")
              meta = out + ".budget.json"
              if not os.path.exists(meta):
                  p(f"table {tag}: budget {size}")
                  s0 = time.time()
                  j = json.loads(run_json([E, "quantize", os.path.join(SHARED, "models", "tl-8m"), "-o", out,
                                           "--target-size", str(size), "--data", cal_text, "--cache", cache,
                                           "--threads", T, "--no-edgeq-metadata", "--json"] + budget_flags, env))
                  j["wall_seconds"] = time.time() - s0
                  json.dump(j, open(meta, "w"))
              j = json.load(open(meta))
              r = llama_kld(out, base, eval_text)
              r.update({"predicted": j["predicted_kld"], "calib_measured": j["measured_kld"], "jobs_run": j["jobs_run"],
                        "seconds": j["seconds"]})
              row["budget"] = r
              results[(tag, ty)] = row
              p(f"table {tag} {ty}: budget {r['kld']:.6f} (predicted {r['predicted']:.6f}), fixed {best['method']} "
                f"{best['kld']:.6f}, golden {row['golden']['kld']:.6f}")
          except Missing as m:
            p(f"table {tag} {ty}: not measured yet ({m})")
          write_md(a, results, cost)
        if tag == "1" and not REPORT_ONLY:  # the cost: one auto quantize from the text, against the search that filled the cache
            c = os.path.join(W, "cost-auto.json")
            if not os.path.exists(c):
                p("cost: quantize --method auto --data calib.txt")
                s0 = time.time()
                run([E, "quantize", f32, "-o", os.path.join(W, "cost-auto.gguf"), "-t", "Q4_K_M", "--method", "auto",
                     "--data", calib, "--threads", T, "--no-edgeq-metadata"], env)
                json.dump({"seconds": time.time() - s0}, open(c, "w"))
            cost["auto"] = json.load(open(c))["seconds"]
            first = json.load(open(os.path.join(W, f"t1-budget-{golden_size(TYPES[0])}-{a.budget_chunks or 'default'}.gguf.budget.json")))
            cost["budget"] = first["seconds"]
            cost["first_jobs"] = first["jobs_run"]
        write_md(a, results, cost)
    p("wrote", a.out)
    return 0


def run_json(cmd, env):
    if REPORT_ONLY:
        raise Missing(" ".join(cmd))
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return out.stdout


def write_md(a, results, cost):
    s = [BEGIN, "", "## Budget mixes (issue 22): tl-8m at the sizes of llama.cpp's imatrix goldens", "",
         "`edgeq quantize --target-size SIZE --data TEXT` (gptq, the default candidate types, "
         f"{'--budget-chunks ' + a.budget_chunks if a.budget_chunks else 'the default --budget-chunks'}) at the byte size "
         "of llama.cpp's imatrix golden, beside edgeq's best fixed mix of that size (the same llama.cpp mix, `--method "
         f"{'` or `'.join(METHODS)}`) and the golden. Mean KLD measured by llama.cpp's `llama-perplexity "
         "--kl-divergence` (AVX2 build) against the F32 conversion, n_ctx 256; predicted: the budget's own prediction "
         f"(the additive model: each tensor's KLD alone times its type's interaction factor, sensitivities on {a.budget_chunks or 'the default number of'} chunks of the calibration text); calibration-measured: the chosen mix itself measured on those chunks (the one evaluation the budget makes after the solve). Generated by `bench/budget_results.py` "
         "(`LLAMA_CPP_BIN=/path/to/llama.cpp/bin`).", ""]
    for tag, title in (("1", "Table 1 protocol: calibration on calib.txt, evaluation on tinystories-heldout.txt (120 chunks)"),
                       ("2", "Table 2 protocol (domain shift): calibration on the first half of calib.txt, evaluation on its second half")):
        rows = [(ty, results[(tag, ty)]) for ty in TYPES if (tag, ty) in results]
        if not rows:
            continue
        s += [f"### {title}", "",
              "| size of | target bytes | budget bytes | budget KLD | predicted | predicted / measured | calibration-measured "
              "| / measured | best fixed | its KLD | budget / fixed | golden KLD | budget / golden |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
        for ty, r in rows:
            b, f, g = r["budget"], r["fixed"], r["golden"]
            s.append(f"| {ty} | {r['size_target']} | {b['size']} | {b['kld']:.6f} | {b['predicted']:.6f} | "
                     f"{b['predicted'] / b['kld']:.2f} | {b['calib_measured']:.6f} | {b['calib_measured'] / b['kld']:.2f} | "
                     f"{ty} {f['method']} | {f['kld']:.6f} | {b['kld'] / f['kld']:.2f} | "
                     f"{g['kld']:.6f} | {b['kld'] / g['kld']:.2f} |")
        s.append("")
    if cost:
        s += [f"Cost (same machine, back to back): one `quantize -t Q4_K_M --method auto --data calib.txt` "
              f"{cost['auto']:.0f} s; the budget search with an empty cache ({cost['first_jobs']} jobs, calibration "
              f"included) {cost['budget']:.0f} s = {cost['budget'] / max(cost['auto'], 1e-9):.2f}x; each further "
              "budget is a solve and a write from the cache.", ""]
    s.append(END)
    section = "\n".join(s) + "\n"
    doc = open(a.out).read() if os.path.exists(a.out) else ""
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + section + doc[doc.index(END) + len(END) + 1:]
    else:
        doc = doc.rstrip("\n") + "\n\n" + section
    open(a.out, "w").write(doc)


if __name__ == "__main__":
    sys.exit(main())
