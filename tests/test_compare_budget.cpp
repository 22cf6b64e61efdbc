// Budget entries of the compare sweep (SweepOptions::budgets, `edgeq compare --budgets / --budget-bpw`) on
// stories260K: the budget file fits its target (within 0.5%), beats the fixed mix of the largest size below it on
// the evaluation text, is reported and plotted apart from the fixed mixes, resumes like any entry, and a --plan
// line runs it alone to the same result; bad budgets are usage errors before any work.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "edgeq/base/error.h"
#include "edgeq/compare/report.h"
#include "edgeq/compare/sweep.h"
#include "edgeq/formats/mapped_file.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using namespace edgeq;

namespace {

const std::string kModel = edgeq::test::shared("models/stories260K");
const std::string kText = edgeq::test::shared("text/tinystories-heldout.txt");
const std::string kEdgeq = std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq";

compare::SweepOptions options(const edgeq::test::TempDir& dir) {
  compare::SweepOptions o;
  o.source = kModel;
  o.out_dir = dir.file("report");
  o.eval_text = kText;
  o.calib_text = kText;  // the budget's sensitivities: chunks spread over the text (only 2 of them)
  o.calib_chunks = 8;
  o.types = {"Q5_0", "Q4_0"};
  o.methods = {"rtn"};
  o.budget_types = {GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0};
  o.n_ctx = 64;
  o.max_chunks = 16;
  o.threads = 2;
  return o;
}

const compare::EntryResult* find(const compare::Report& r, const std::string& type) {
  for (auto& e : r.entries)
    if (e.type == type) return &e;
  return nullptr;
}

}  // namespace

TEST(CompareBudget, FitsItsTargetAndBeatsTheFixedMixBelowIt) {
  // The budget's code runs under the sanitizers in test_budget; this is the sweep's wiring (1.6 s of CPU here).
  if (EDGEQ_SANITIZED) GTEST_SKIP() << "4 sweep entries and 3 x 3 sensitivity jobs: the Release build runs them";
  edgeq::test::TempDir dir;
  setenv("EDGEQ_CACHE", dir.file("cache").c_str(), 1);
  auto o = options(dir);
  o.calib_text.clear();  // read by the budgets only
  const auto fixed = compare::run_sweep(o);
  o.calib_text = kText;
  ASSERT_EQ(fixed.report.entries.size(), 2u);
  const auto* q5 = find(fixed.report, "Q5_0");
  const auto* q4 = find(fixed.report, "Q4_0");
  ASSERT_TRUE(q5 && q4);
  ASSERT_LT(q4->file_bytes, q5->file_bytes);

  // Two budgets: just above Q5_0's size (by bytes) and between Q4_0 and Q5_0 (by bits per weight).
  const uint64_t target = q5->file_bytes + q5->file_bytes / 50;
  const double mid_bpw = 0.5 * (q4->bits_per_weight + q5->bits_per_weight);
  o.budgets = {std::to_string(target), fmt::format("{:.2f}bpw", mid_bpw)};
  const auto out = compare::run_sweep(o);
  EXPECT_EQ(out.n_skipped, 2u);  // the fixed mixes are not measured again
  EXPECT_EQ(out.n_run, 2u);
  ASSERT_EQ(out.report.entries.size(), 4u);
  const auto* by_size = find(out.report, "budget-" + std::to_string(target));
  const auto* by_bpw = find(out.report, fmt::format("budget-{:.2f}bpw", mid_bpw));
  ASSERT_TRUE(by_size && by_bpw);
  EXPECT_EQ(by_size->method, "rtn");  // the sweep's only method
  EXPECT_LE(by_size->file_bytes, target);
  EXPECT_GE(double(by_size->file_bytes), 0.995 * double(target));
  EXPECT_EQ(by_size->budget_target_bytes, target);
  EXPECT_LE(by_bpw->bits_per_weight, std::stod(fmt::format("{:.2f}", mid_bpw)) + 1e-9);
  EXPECT_GT(by_bpw->bits_per_weight, q4->bits_per_weight);
  // Measured on the evaluation text like the fixed mixes: lower KLD than the fixed mix of the size below.
  EXPECT_LT(by_size->mean_kld, q5->mean_kld);
  EXPECT_LT(by_bpw->mean_kld, q4->mean_kld);
  // The budget's own prediction and its measurement on the calibration chunks are recorded.
  EXPECT_GT(by_size->predicted_kld, 0);
  EXPECT_GT(by_size->calib_kld, 0);
  EXPECT_EQ(by_size->budget_chunks, 2);

  // report.md lists them with the fixed mix below; the plots draw them as diamonds with their own legend entry.
  const std::string md = read_text_file(o.out_dir + "/report.md");
  EXPECT_NE(md.find("Budget entries"), std::string::npos);
  EXPECT_NE(md.find("| budget-" + std::to_string(target) + " | rtn |"), std::string::npos);
  const std::string svg = read_text_file(o.out_dir + "/kld_vs_bpw.svg");
  EXPECT_NE(svg.find("data-type=\"budget-" + std::to_string(target) + "\" data-method=\"rtn\" data-budget=\"true\""),
            std::string::npos);
  EXPECT_NE(svg.find(">budget (rtn)</text>"), std::string::npos);
  const auto j = nlohmann::json::parse(read_text_file(o.out_dir + "/report.json"));
  size_t n_budget = 0;
  for (auto& e : j["entries"])
    if (e.contains("budget")) ++n_budget;
  EXPECT_EQ(n_budget, 2u);

  // A plan line of a budget entry runs it alone and gives the same result (the sensitivities from the cache).
  const auto lines = compare::plan_lines(o, kEdgeq);
  ASSERT_EQ(lines.size(), 4u);
  const auto cmd = nlohmann::json::parse(lines[2])["command"];
  std::vector<std::string> argv = cmd.get<std::vector<std::string>>();
  EXPECT_NE(std::find(argv.begin(), argv.end(), "--budget-types"), argv.end());
  if (fs::exists(kEdgeq)) {
    std::string line = "EDGEQ_PROGRESS=off";
    for (auto& a : argv) line += " '" + (a == nlohmann::json::parse(lines[2])["result"].get<std::string>() ? dir.file("alone.json") : a) + "'";
    const auto r = edgeq::test::run_shell(line);
    ASSERT_EQ(r.code, 0) << r.err;
    const auto alone = nlohmann::json::parse(read_text_file(dir.file("alone.json")));
    const auto mine = nlohmann::json::parse(read_text_file(nlohmann::json::parse(lines[2])["result"].get<std::string>()));
    EXPECT_EQ(alone["entry"]["key"], mine["entry"]["key"]);
    EXPECT_EQ(alone["entry"]["mean_kld"], mine["entry"]["mean_kld"]);
    EXPECT_EQ(alone["entry"]["file_bytes"], mine["entry"]["file_bytes"]);
  }
  unsetenv("EDGEQ_CACHE");
}

TEST(CompareBudget, BadBudgetsAreUsageErrorsBeforeWork) {
  if (!fs::exists(kEdgeq)) GTEST_SKIP() << "edgeq not built";
  edgeq::test::TempDir dir;
  const std::string base = kEdgeq + " compare " + kModel + " -o " + dir.file("r") + " --eval " + kText + " --calib " + kText;
  for (const char* bad : {" --budgets 2X", " --budgets 0", " --budgets 1M,,2M", " --budget-bpw 0", " --budget-bpw 40",
                          " --budget-bpw 2.5e0", " --budget-bpw abc", " --budgets 1M --budget-types Q4_0,NOPE"}) {
    const auto r = edgeq::test::run_shell(base + bad);
    EXPECT_EQ(r.code, 2) << bad << ": " << r.err;
    EXPECT_FALSE(fs::exists(dir.file("r"))) << bad;
  }
  // a budget needs the calibration text its sensitivities are measured on
  const auto r = edgeq::test::run_shell(kEdgeq + " compare " + kModel + " -o " + dir.file("r") + " --eval " + kText +
                                        " --budgets 1M");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("--calib"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir.file("r")));
  const auto h = edgeq::test::run_shell(kEdgeq + " compare --help");
  EXPECT_NE(h.out.find("--budgets"), std::string::npos);
  EXPECT_NE(h.out.find("--budget-bpw"), std::string::npos);
}
