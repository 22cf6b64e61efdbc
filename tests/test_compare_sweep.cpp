// The quantization sweep (edgeq/compare/sweep.h) on the model shipped in data/: numbers agree with direct
// runs, an interrupted sweep resumes to the same report as an uninterrupted one, entries are keyed by their
// inputs and flags, and bad requests fail before any work.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "edgeq/calibrate/calibrate.h"
#include "edgeq/compare/report.h"
#include "edgeq/compare/sweep.h"
#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/runtime/model.h"
#include "edgeq/runtime/perplexity.h"
#include "edgeq/runtime/tokenizer.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using namespace edgeq;

namespace {

const std::string kModel = std::string(EDGEQ_SOURCE_DIR) + "/data/tl-8m";
const std::string kEval = std::string(EDGEQ_SOURCE_DIR) + "/data/eval.txt";
const std::string kCalib = edgeq::test::shared("text/calib.txt");

std::string temp_dir(const std::string& tag) {
  auto d = fs::temp_directory_path() / ("edgeq-sweep-" + tag + "-" + std::to_string(getpid()));
  fs::remove_all(d);
  return d.string();
}

compare::SweepOptions small(const std::string& dir) {
  compare::SweepOptions o;
  o.source = kModel;
  o.out_dir = dir;
  o.eval_text = kEval;
  o.types = {"F16", "Q4_K_M", "Q2_K"};
  o.n_ctx = 128;
  o.max_chunks = 2;
  o.threads = 2;
  return o;
}

// report.json without timings (they differ between runs)
nlohmann::json without_timings(nlohmann::json j) {
  j["reference"].erase("eval_seconds");
  for (auto& e : j["entries"])
    for (auto k : {"quantize_seconds", "eval_seconds", "eval_tokens_per_second"}) e.erase(k);
  return j;
}

nlohmann::json read_json(const std::string& p) { return nlohmann::json::parse(read_text_file(p)); }

// One uninterrupted sweep shared by the tests.
struct Baseline {
  std::string dir = temp_dir("base");
  compare::SweepOutcome out;
  Baseline() { out = compare::run_sweep(small(dir)); }
  ~Baseline() { fs::remove_all(dir); }
};
const Baseline& baseline() {
  static Baseline b;
  return b;
}

}  // namespace

TEST(CompareSweep, ReportAgreesWithDirectRuns) {
  const auto& b = baseline();
  ASSERT_FALSE(b.out.interrupted);
  EXPECT_EQ(b.out.n_run, 3u);
  const auto j = read_json(b.dir + "/report.json");
  ASSERT_EQ(j["entries"].size(), 3u);
  EXPECT_EQ(j["reference"]["file_type"], "F32");
  EXPECT_EQ(j["reference"]["n_chunks"], 2);
  EXPECT_EQ(j["reference"]["scored_tokens"], 2 * 63);
  EXPECT_EQ(j["reference"]["parameters"], 8392960u);
  // sorted by bits per weight, and the KL divergence grows as bits shrink
  EXPECT_EQ(j["entries"][0]["type"], "F16");
  EXPECT_EQ(j["entries"][1]["type"], "Q4_K_M");
  EXPECT_EQ(j["entries"][2]["type"], "Q2_K");
  EXPECT_NEAR(j["entries"][0]["bits_per_weight"].get<double>(), 16.0, 0.01);
  EXPECT_LT(j["entries"][0]["mean_kld"].get<double>() * 20, j["entries"][1]["mean_kld"].get<double>());
  EXPECT_LT(j["entries"][1]["mean_kld"].get<double>() * 3, j["entries"][2]["mean_kld"].get<double>());
  // each entry is alone in its size band here, so each is the best of its band
  for (auto& e : j["entries"]) EXPECT_TRUE(e["best_in_band"].get<bool>());

  // the reference row is a plain perplexity run of the F32 conversion (the sweep converts it itself)
  {
    compare::SweepOptions keep = small(temp_dir("keep"));
    keep.types = {"Q4_K_M"};
    keep.keep = true;
    auto out = compare::run_sweep(keep);
    EXPECT_TRUE(fs::exists(keep.out_dir + "/models/Q4_K_M-rtn.gguf"));  // --keep keeps the file
    auto model = runtime::Model::load(keep.out_dir + "/work/reference.gguf");
    auto tok = Tokenizer::from_gguf(model.gguf());
    auto ids = tok.tokenize(read_text_file(kEval), true, false);
    runtime::PerplexityOptions po;
    po.n_ctx = 128;
    po.max_chunks = 2;
    po.n_threads = 2;
    auto direct = runtime::perplexity(model, ids, tok.add_bos(), tok.bos(), po);
    EXPECT_NEAR(j["reference"]["ppl"].get<double>(), direct.ppl, 1e-6 * direct.ppl);
    // the same entry measured in another directory gives the same numbers (determinism, independent entries)
    EXPECT_EQ(out.report.entries.at(0).mean_kld, j["entries"][1]["mean_kld"].get<double>());
    // the quantized file is the one measured: its perplexity against the reference log-probabilities
    auto q = runtime::Model::load(keep.out_dir + "/models/Q4_K_M-rtn.gguf");
    po.kld_in = keep.out_dir + "/work/reference.kld";
    auto qr = runtime::perplexity(q, ids, tok.add_bos(), tok.bos(), po);
    EXPECT_EQ(qr.ppl, j["entries"][1]["ppl"].get<double>());
    EXPECT_EQ(qr.kld->mean_kld, j["entries"][1]["mean_kld"].get<double>());
    fs::remove_all(keep.out_dir);
  }
  // without --keep nothing but the report and the results is left
  EXPECT_FALSE(fs::exists(b.dir + "/work"));
  EXPECT_FALSE(fs::exists(b.dir + "/models"));
  for (auto f : {"report.md", "report.csv", "ppl_vs_bpw.svg", "kld_vs_bpw.svg"}) EXPECT_TRUE(fs::exists(b.dir + "/" + f)) << f;
  const std::string md = read_text_file(b.dir + "/report.md");
  EXPECT_NE(md.find("| Q4_K_M "), std::string::npos) << md;
  EXPECT_NE(md.find(compare::recommendation(b.out.report)), std::string::npos);
  EXPECT_EQ(std::count(md.begin(), md.end(), '\n') > 8, true);
}

TEST(CompareSweep, RecommendsTheSmallestFileWithinOnePercent) {
  compare::Report r;
  r.reference.ppl = 10.0;
  auto add = [&](const char* type, double bpw, uint64_t bytes, double ppl, double kld) {
    compare::EntryResult e;
    e.type = type;
    e.method = "rtn";
    e.bits_per_weight = bpw;
    e.file_bytes = bytes;
    e.ppl = ppl;
    e.mean_kld = kld;
    r.entries.push_back(e);
  };
  add("Q8_0", 8.5, 850, 10.01, 0.0001);
  add("Q5_K_M", 5.7, 570, 10.09, 0.002);
  add("Q4_K_M", 4.9, 490, 10.2, 0.004);
  EXPECT_NE(compare::recommendation(r).find("Recommended: Q5_K_M (rtn)"), std::string::npos) << compare::recommendation(r);
  r.entries[1].ppl = 10.11;  // now just outside 1%
  EXPECT_NE(compare::recommendation(r).find("Recommended: Q8_0 (rtn)"), std::string::npos);
  for (auto& e : r.entries) e.ppl = 12;
  EXPECT_NE(compare::recommendation(r).find("No file is within 1%"), std::string::npos);
  // bands: whole bits; the lowest KLD of a band is marked
  add("Q4_K_S", 4.6, 460, 10.3, 0.003);
  EXPECT_EQ(compare::size_band(4.99999), 5);  // as the table prints it: 5.00
  EXPECT_EQ(compare::size_band(4.994), 4);
  const auto best = compare::best_in_band(r);
  EXPECT_EQ(best, (std::vector<bool>{true, true, false, true}));
}

TEST(CompareSweep, InterruptedThenResumedEqualsUninterrupted) {
  const auto& b = baseline();
  auto o = small(temp_dir("intr"));
  fs::create_directories(o.out_dir + "/work");
  edgeq::test::write_file(o.out_dir + "/work/mine.txt", {'m', 'i', 'n', 'e'});  // a user's file: never removed
  std::atomic<bool> cancel{false};
  o.cancel = &cancel;
  size_t finished = 0;
  auto out = compare::run_sweep(o, [&](const compare::SweepProgress& p) {
    if (p.stage == "done" && ++finished == 2) cancel = true;  // as a SIGINT after the second entry
  });
  EXPECT_TRUE(out.interrupted);
  // a consistent report of the finished entries is on disk
  auto partial = read_json(o.out_dir + "/report.json");
  EXPECT_EQ(partial["entries"].size(), 2u);
  EXPECT_TRUE(fs::exists(o.out_dir + "/work/reference.kld"));  // kept for the rerun
  for (auto& e : fs::directory_iterator(o.out_dir + "/models")) ADD_FAILURE() << "left behind: " << e.path();

  cancel = false;
  std::vector<std::string> stages;
  auto again = compare::run_sweep(o, [&](const compare::SweepProgress& p) { stages.push_back(p.label + ":" + p.stage); });
  EXPECT_FALSE(again.interrupted);
  EXPECT_EQ(again.n_skipped, 2u);
  EXPECT_EQ(again.n_run, 1u);
  // the reference was not made again
  EXPECT_NE(std::find(stages.begin(), stages.end(), "reference:skipped"), stages.end());
  EXPECT_EQ(std::find(stages.begin(), stages.end(), "reference:convert"), stages.end());
  auto a = without_timings(read_json(o.out_dir + "/report.json"));
  auto c = without_timings(read_json(b.dir + "/report.json"));
  a["reference"].erase("source");  // the same source by another path would be fine too; here both are kModel
  c["reference"].erase("source");
  EXPECT_EQ(a.dump(1), c.dump(1));
  EXPECT_TRUE(fs::exists(o.out_dir + "/work/mine.txt"));
  EXPECT_FALSE(fs::exists(o.out_dir + "/work/reference.gguf"));  // the sweep's own files are gone
  // a third run has nothing to do
  auto third = compare::run_sweep(o);
  EXPECT_EQ(third.n_run, 0u);
  EXPECT_EQ(third.n_skipped, 3u);
  fs::remove_all(o.out_dir);
}

TEST(CompareSweep, KeysFollowInputsAndFlags) {
  auto o = small("unused");
  const compare::Entry e{"Q4_K_M", "rtn"};
  const std::string k = compare::entry_key(o, e);
  EXPECT_EQ(k.size(), 16u);
  auto t = o;
  t.threads = 1;  // results do not depend on it
  EXPECT_EQ(compare::entry_key(t, e), k);
  t = o;
  t.max_chunks = 3;
  EXPECT_NE(compare::entry_key(t, e), k);
  t = o;
  t.n_ctx = 256;
  EXPECT_NE(compare::entry_key(t, e), k);
  t = o;
  t.eval_text = std::string(EDGEQ_SOURCE_DIR) + "/data/README.md";
  EXPECT_NE(compare::entry_key(t, e), k);
  EXPECT_THROW(compare::entry_key(o, {"Q4_K_M", "imatrix"}), Error);  // needs --imatrix
  t = o;
  t.imatrix = edgeq::test::shared("golden/tl-8m.imatrix");
  const std::string ki = compare::entry_key(t, {"Q4_K_M", "imatrix"});
  EXPECT_NE(ki, k);
  EXPECT_EQ(compare::entry_key(t, e), k);  // rtn does not read the imatrix

  // calibrated methods are keyed by the calibration text (path and contents) and its chunks; rtn is not
  const std::string dir = temp_dir("keys");
  fs::create_directories(dir);
  const std::string calib2 = dir + "/calib.txt";
  fs::copy_file(kCalib, calib2);
  t = o;
  t.calib_text = calib2;
  EXPECT_EQ(compare::entry_key(t, e), k);
  std::map<std::string, std::string> keyed;
  for (auto m : {"imatrix", "awq", "gptq", "auto"}) keyed[m] = compare::entry_key(t, {"Q4_K_M", m});
  EXPECT_EQ(std::set<std::string>({keyed["imatrix"], keyed["awq"], keyed["gptq"], keyed["auto"], k}).size(), 5u);
  auto changed = [&](const compare::SweepOptions& x) {
    for (auto& [m, key] : keyed) EXPECT_NE(compare::entry_key(x, {"Q4_K_M", m}), key) << m;
    EXPECT_EQ(compare::entry_key(x, e), k);
  };
  {
    std::ofstream(calib2, std::ios::app) << "one more line\n";  // the same path, other contents
    changed(t);
    auto x = t;
    x.calib_chunks = 4;
    changed(x);
    fs::copy_file(kCalib, calib2, fs::copy_options::overwrite_existing);
    for (auto& [m, key] : keyed) EXPECT_EQ(compare::entry_key(t, {"Q4_K_M", m}), key) << m;
  }
  // an imatrix file takes the imatrix method off the calibration text
  t.imatrix = edgeq::test::shared("golden/tl-8m.imatrix");
  EXPECT_EQ(compare::entry_key(t, {"Q4_K_M", "imatrix"}), ki);
  EXPECT_EQ(compare::entry_key(t, {"Q4_K_M", "gptq"}), keyed["gptq"]);
  // the reference type is part of every key
  t = o;
  t.ref_type = "f16";
  EXPECT_NE(compare::entry_key(t, e), k);
  t.ref_type = "f32";
  EXPECT_EQ(compare::entry_key(t, e), k);  // what auto picks for tl-8m
  fs::remove_all(dir);
}

TEST(CompareSweep, DefaultMethodsFollowTheCalibrationInput) {
  compare::SweepOptions o;
  EXPECT_EQ(compare::default_methods(o), (std::vector<std::string>{"rtn"}));
  o.imatrix = "m.imatrix";
  EXPECT_EQ(compare::default_methods(o), (std::vector<std::string>{"rtn", "imatrix"}));
  o.calib_text = "calib.txt";
  EXPECT_EQ(compare::default_methods(o), (std::vector<std::string>{"rtn", "imatrix", "auto"}));
  // every method is one row; the calibrated ones skip float types
  std::vector<std::string> names;
  for (auto& m : compare::methods()) names.push_back(m.name);
  EXPECT_EQ(names, (std::vector<std::string>{"rtn", "imatrix", "awq", "gptq", "auto"}));
  o = small("unused");
  o.calib_text = kCalib;
  o.methods = {"rtn", "awq"};
  auto entries = compare::plan_entries(o);
  ASSERT_EQ(entries.size(), 5u);  // F16 rtn, Q4_K_M rtn/awq, Q2_K rtn/awq
  EXPECT_EQ(entries[0].id(), "F16-rtn");
  EXPECT_EQ(entries[2].id(), "Q4_K_M-awq");
  // --types low-bit: the 3-bit and smaller mixes; plain rounding only where it can write the file (not IQ1/IQ2,
  // Q2_K_S, nor IQ2_M, whose layers are IQ2_S), unless rtn is the only method
  o.types = {"low-bit"};
  o.methods = {"rtn", "imatrix"};
  std::vector<std::string> ids;
  for (const auto& e : compare::plan_entries(o)) ids.push_back(e.id());
  EXPECT_EQ(ids, (std::vector<std::string>{"Q3_K_S-rtn", "Q3_K_S-imatrix", "IQ3_M-rtn", "IQ3_M-imatrix", "IQ3_S-rtn",
                                           "IQ3_S-imatrix", "IQ3_XS-rtn", "IQ3_XS-imatrix", "IQ3_XXS-rtn",
                                           "IQ3_XXS-imatrix", "Q2_K-rtn", "Q2_K-imatrix", "Q2_K_S-imatrix",
                                           "IQ2_M-imatrix", "IQ2_S-imatrix", "IQ2_XS-imatrix", "IQ2_XXS-imatrix",
                                           "IQ1_M-imatrix", "IQ1_S-imatrix"}));
  o.methods = {"rtn"};
  o.calib_text.clear();
  EXPECT_EQ(compare::plan_entries(o).size(), 13u);
  EXPECT_EQ(compare::expand_types({"Q8_0", "default"}),
            (std::vector<std::string>{"Q8_0", "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"}));
}

TEST(CompareSweep, ReferenceTypeFollowsTheAvailableMemory) {
  const uint64_t GiB = 1ull << 30;
  // auto: F32 while 1.5 x its size fits in the available memory, else F16
  EXPECT_EQ(compare::choose_reference_type("auto", 1000, 1500).outtype, "f32");
  EXPECT_EQ(compare::choose_reference_type("auto", 1000, 1499).outtype, "f16");
  const auto big = compare::choose_reference_type("auto", 28 * GiB, 24 * GiB);  // a 7B model on this machine
  EXPECT_EQ(big.outtype, "f16");
  EXPECT_EQ(big.reason, "F16 (auto: 1.5 x the F32 size, 28.00 GiB, exceeds the available memory)");
  const auto small_model = compare::choose_reference_type("auto", 32 * (1ull << 20), 24 * GiB);
  EXPECT_EQ(small_model.outtype, "f32");
  EXPECT_EQ(small_model.reason, "F32 (auto: 1.5 x its 32.0 MiB fits in the available memory)");
  EXPECT_EQ(compare::choose_reference_type("auto", 28 * GiB, 0).outtype, "f32");  // unknown memory
  // forced either way
  EXPECT_EQ(compare::choose_reference_type("f16", 1000, 100 * GiB).outtype, "f16");
  EXPECT_EQ(compare::choose_reference_type("f32", 100 * GiB, 1000).outtype, "f32");
  EXPECT_EQ(compare::choose_reference_type("f32", 100 * GiB, 1000).reason, "F32, as asked (--ref-type f32)");
  EXPECT_THROW(compare::choose_reference_type("bf16", 1, 1), Error);
  // /proc/meminfo is read: something between 1 MiB and the machine's total
  const uint64_t avail = compare::mem_available_bytes();
  EXPECT_GT(avail, 1ull << 20);
  EXPECT_LT(avail, 1ull << 50);
}

// Calibrated methods: one calibration (with Hessians) for all of them, each entry quantized by its method,
// the same numbers when an entry runs alone (--plan), and a changed calibration text reruns exactly them.
TEST(CompareSweep, CalibratedMethodsShareOneCalibration) {
  auto o = small(temp_dir("calib"));
  o.types = {"Q4_0"};
  // Under the sanitizers (CI's second build) rtn and gptq: the sweep's sharing of one calibration is the same,
  // and the methods' own code runs there in test_gptq (auto alone took most of a minute under ASan).
  const std::vector<std::string> methods = EDGEQ_SANITIZED ? std::vector<std::string>{"rtn", "gptq"}
                                                           : std::vector<std::string>{"rtn", "imatrix", "awq", "gptq", "auto"};
  o.methods = methods;
  o.calib_text = kCalib;
  o.calib_chunks = 4;
  o.keep = true;
  std::vector<std::string> events;
  auto out = compare::run_sweep(o, [&](const compare::SweepProgress& p) { events.push_back(p.label + ":" + p.stage); });
  ASSERT_FALSE(out.interrupted);
  EXPECT_EQ(out.n_run, methods.size());
  // the reference is loaded once and calibrated once, before the first entry
  EXPECT_EQ(std::count(events.begin(), events.end(), "reference:load"), 1);
  const auto first_cal = std::find(events.begin(), events.end(), "calibration:calibrate");
  const auto last_cal = std::find(events.rbegin(), events.rend(), "calibration:calibrate").base();
  ASSERT_NE(first_cal, events.end());
  EXPECT_TRUE(std::all_of(first_cal, last_cal, [](auto& s) { return s == "calibration:calibrate"; }));
  EXPECT_LE(last_cal - events.begin(), std::find(events.begin(), events.end(), "Q4_0 rtn:prepare") - events.begin());
  // statistics of 4 chunks of 128 tokens with Hessians, in DIR/work while --keep
  const auto stats = calibrate::read_calibration_stats(o.out_dir + "/work/calibration.gguf");
  EXPECT_EQ(stats.n_chunks, 4);
  EXPECT_EQ(stats.n_ctx, 128);
  ASSERT_FALSE(stats.inputs.empty());
  EXPECT_EQ(stats.inputs[0].load_hessian().size(), size_t(256 * 256));
  // each file was quantized by its method, with the statistics of the calibration text
  for (const auto& m : methods) {
    auto g = GgufFile::open(o.out_dir + "/models/Q4_0-" + m + ".gguf");
    const std::string rec = g.get_string("edgeq.quantize.method").value_or("");
    EXPECT_EQ(rec.rfind(m == "rtn" ? "edgeq Q4_0" : fmt::format("edgeq-{} Q4_0", m), 0), 0u) << rec;
    if (m != "rtn") {
      EXPECT_EQ(g.get_string("quantize.imatrix.file").value_or(""), kCalib) << m;
    }
  }
  std::map<std::string, compare::EntryResult> by;
  for (auto& e : out.report.entries) by[e.method] = e;
  ASSERT_EQ(by.size(), methods.size());
  // the report says what the calibrated methods read
  EXPECT_EQ(by["rtn"].inputs, "");
  EXPECT_EQ(by["gptq"].inputs, fmt::format("`{}` (4 chunks of 128 tokens)", kCalib));
  EXPECT_NE(read_text_file(o.out_dir + "/report.md")
                .find(fmt::format("Statistics for {}: `{}` (4 chunks of 128 tokens).",
                                  EDGEQ_SANITIZED ? "gptq" : "imatrix, awq, gptq, auto", kCalib)),
            std::string::npos);
  // different roundings give different files; importance-weighted rounding beats plain rounding on this model
  std::set<double> klds;
  for (auto& [m, e] : by) klds.insert(e.mean_kld);
  EXPECT_EQ(klds.size(), methods.size());
  if (!EDGEQ_SANITIZED) {
    EXPECT_LT(by["imatrix"].mean_kld, by["rtn"].mean_kld);
  }
  EXPECT_LT(by["gptq"].mean_kld, by["rtn"].mean_kld);

  // one entry run alone in another directory (a --plan line) calibrates there and measures the same
  {
    auto one = o;
    one.out_dir = temp_dir("calib-one");
    one.keep = false;
    auto r = compare::run_entry(one, {"Q4_0", "gptq"}, one.out_dir + "/results/Q4_0-gptq.json");
    EXPECT_EQ(r.n_run, 1u);
    auto j = read_json(one.out_dir + "/results/Q4_0-gptq.json");
    EXPECT_EQ(j["entry"]["key"], by["gptq"].key);
    EXPECT_EQ(j["entry"]["mean_kld"].get<double>(), by["gptq"].mean_kld);
    EXPECT_EQ(j["entry"]["file_bytes"].get<uint64_t>(), by["gptq"].file_bytes);
    fs::remove_all(one.out_dir);
  }

  // another calibration text: rtn is kept, the calibrated entry is measured again after a new calibration
  // (without Hessians now: only imatrix runs)
  const std::string calib2 = o.out_dir + "/calib2.txt";
  fs::copy_file(kCalib, calib2);
  std::ofstream(calib2, std::ios::app) << "A different ending for the calibration text.\n";
  auto o2 = o;
  o2.calib_text = calib2;
  o2.methods = {"rtn", "imatrix"};
  o2.keep = false;
  events.clear();
  auto again = compare::run_sweep(o2, [&](const compare::SweepProgress& p) { events.push_back(p.label + ":" + p.stage); });
  EXPECT_EQ(again.n_skipped, 1u);
  EXPECT_EQ(again.n_run, 1u);
  EXPECT_NE(std::find(events.begin(), events.end(), "Q4_0 rtn:skipped"), events.end());
  EXPECT_NE(std::find(events.begin(), events.end(), "calibration:calibrate"), events.end());
  EXPECT_NE(std::find(events.begin(), events.end(), "reference:skipped"), events.end());  // the reference is reused
  // the same text again: nothing to do
  auto third = compare::run_sweep(o2);
  EXPECT_EQ(third.n_run, 0u);
  EXPECT_EQ(third.n_skipped, 2u);
  EXPECT_FALSE(fs::exists(o.out_dir + "/work/calibration.gguf"));  // complete without --keep: removed
  fs::remove_all(o.out_dir);
}

TEST(CompareSweep, RefusesBadRequestsBeforeWork) {
  auto o = small(temp_dir("bad"));
  auto expect_fail = [&](compare::SweepOptions x, const std::string& what) {
    try {
      compare::run_sweep(x);
      ADD_FAILURE() << "accepted: " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(x.out_dir + "/work")) << what;
  };
  auto x = o;
  x.methods = {"magic"};
  expect_fail(x, "unknown method 'magic'");
  x = o;
  x.methods = {"imatrix"};
  expect_fail(x, "--imatrix FILE");
  x = o;
  x.types = {"Q4_K_X"};
  expect_fail(x, "Q4_K_X");
  x = o;
  x.calib_text = kEval;
  x.methods = {"rtn"};
  expect_fail(x, "none of the methods (rtn) reads a calibration text");
  for (auto m : {"awq", "gptq", "auto"}) {
    x = o;
    x.methods = {"rtn", m};
    expect_fail(x, fmt::format("method {} needs a calibration text (--calib TEXT)", m));
  }
  x = o;
  x.methods = {"imatrix"};
  x.calib_text = "/nonexistent/calib.txt";
  expect_fail(x, "/nonexistent/calib.txt");
  x = o;
  x.methods = {"gptq"};
  x.calib_text = kCalib;
  x.calib_chunks = 0;
  expect_fail(x, "--calib-chunks 0");
  x = o;
  x.ref_type = "f64";
  expect_fail(x, "--ref-type f64");
  x = o;
  x.source = edgeq::test::shared("golden/tl-8m-F16.gguf");
  x.ref_type = "f32";
  expect_fail(x, "used as it is");
  x = o;
  x.eval_text = "/nonexistent/eval.txt";
  expect_fail(x, "/nonexistent/eval.txt");
  x = o;
  x.source = "/nonexistent/model";
  expect_fail(x, "/nonexistent/model");
  x = o;
  x.methods = {"imatrix"};
  x.types = {"F16"};
  x.imatrix = edgeq::test::shared("golden/tl-8m.imatrix");
  expect_fail(x, "no entries");
  fs::remove_all(o.out_dir);
}
