// `edgeq compare` end to end: --plan, then each planned command, then --merge gives the plain run's report;
// SIGINT stops a sweep with a consistent report and a rerun completes it to the same report; progress is
// printed as plain lines off a terminal and silenced by --quiet; the BASE CANDIDATES form still works.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>

#include "test_helpers.h"

namespace fs = std::filesystem;
extern char** environ;

namespace {

const std::string kEdgeq = std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq";
const std::string kModel = std::string(EDGEQ_SOURCE_DIR) + "/data/tl-8m";
const std::string kEval = std::string(EDGEQ_SOURCE_DIR) + "/data/eval.txt";
const std::string kSweep = " --eval " + kEval + " --types Q8_0,Q5_K_M,Q4_K_M,Q2_K --ctx 128 --chunks 3 -t 2";

using Run = edgeq::test::CmdResult;

std::string quote(const std::string& s) {
  std::string o = "'";
  for (char c : s) o += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return o + "'";
}

std::string slurp(const std::string& p) { return edgeq::test::read_text(p); }

// Runs a shell command line with stderr to a file (not a terminal), no EDGEQ_PROGRESS set.
Run run(const std::string& cmdline) { return edgeq::test::run_shell("unset EDGEQ_PROGRESS; " + cmdline); }

std::string temp_dir(const std::string& tag) {
  auto d = fs::temp_directory_path() / ("edgeq-ccli-" + tag + "-" + std::to_string(getpid()));
  fs::remove_all(d);
  return d.string();
}

nlohmann::json report_without_timings(const std::string& dir) {
  auto j = nlohmann::json::parse(slurp(dir + "/report.json"));
  j["reference"].erase("eval_seconds");
  for (auto& e : j["entries"])
    for (auto k : {"quantize_seconds", "eval_seconds", "eval_tokens_per_second"}) e.erase(k);
  return j;
}

bool have_cli() { return fs::exists(kEdgeq); }

// The plain run every test compares with.
const std::string& plain_dir() {
  static const std::string dir = [] {
    std::string d = temp_dir("plain");
    auto r = run(quote(kEdgeq) + " compare " + kModel + " -o " + d + kSweep);
    EXPECT_EQ(r.code, 0) << r.err;
    // the table and the paths are printed; progress went to stderr as plain lines (no carriage returns)
    EXPECT_NE(r.out.find("| Q4_K_M "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(d + "/report.md"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(d + "/kld_vs_bpw.svg"), std::string::npos) << r.out;
    EXPECT_NE(r.err.find("compare: 100% [4/4] Q2_K rtn"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find('\r'), std::string::npos);
    return d;
  }();
  return dir;
}

}  // namespace

TEST(CompareCli, PlanThenEntriesThenMergeEqualsPlainRun) {
  if (!have_cli()) GTEST_SKIP() << "edgeq not built";
  const std::string plain = plain_dir();
  const std::string d = temp_dir("plan");
  auto plan = run(quote(kEdgeq) + " compare " + kModel + " -o " + d + kSweep + " --plan");
  ASSERT_EQ(plan.code, 0) << plan.err;
  EXPECT_FALSE(fs::exists(d + "/results")) << "--plan only prints";
  std::istringstream lines(plan.out);
  std::string line;
  size_t n = 0;
  while (std::getline(lines, line)) {
    auto j = nlohmann::json::parse(line);
    ++n;
    std::string cmd = "cd " + quote(j["cwd"]) + " &&";
    for (auto& a : j["command"]) {
      cmd.push_back(' ');
      cmd.append(quote(a.get<std::string>()));
    }
    auto r = run(cmd);
    ASSERT_EQ(r.code, 0) << cmd << "\n" << r.err;
    EXPECT_TRUE(fs::exists(j["result"].get<std::string>())) << line;
    EXPECT_FALSE(fs::exists(d + "/report.json")) << "an entry run writes only its result";
  }
  EXPECT_EQ(n, 4u);
  auto merged = run(quote(kEdgeq) + " compare --merge " + d + "/results -o " + d);
  ASSERT_EQ(merged.code, 0) << merged.err;
  EXPECT_EQ(report_without_timings(d).dump(1), report_without_timings(plain).dump(1));
  // the plots carry no timings: byte-identical
  for (auto svg : {"/ppl_vs_bpw.svg", "/kld_vs_bpw.svg"}) EXPECT_EQ(slurp(d + svg), slurp(plain + svg)) << svg;
  // a result measured with other flags is refused by --merge
  auto other = run(quote(kEdgeq) + " compare " + kModel + " -o " + d + "/other --eval " + kEval +
                   " --types Q2_K --ctx 128 --chunks 2 -t 2 --result " + d + "/other/Q2_K-rtn.json");
  ASSERT_EQ(other.code, 0) << other.err;
  auto bad = run(quote(kEdgeq) + " compare --merge " + d + "/results " + d + "/other/Q2_K-rtn.json -o " + d + "/m2");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("different reference"), std::string::npos) << bad.err;
  fs::remove_all(d);
}

TEST(CompareCli, SigintLeavesAConsistentReportAndARerunCompletesIt) {
  if (!have_cli()) GTEST_SKIP() << "edgeq not built";
  const std::string plain = plain_dir();
  const std::string d = temp_dir("sigint");
  std::vector<std::string> args = {kEdgeq, "compare", kModel, "-o", d, "--eval", kEval, "--types",
                                   "Q8_0,Q5_K_M,Q4_K_M,Q2_K", "--ctx", "128", "--chunks", "3", "-t", "2", "--quiet"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, kEdgeq.c_str(), nullptr, nullptr, argv.data(), environ), 0);
  // interrupt as soon as the first entry is finished
  const auto t0 = std::chrono::steady_clock::now();
  while (!fs::exists(d + "/results/Q8_0-rtn.json") && std::chrono::steady_clock::now() - t0 < std::chrono::minutes(3))
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  kill(pid, SIGINT);
  int st = 0;
  waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 130);
  auto partial = nlohmann::json::parse(slurp(d + "/report.json"));
  EXPECT_GE(partial["entries"].size(), 1u);
  EXPECT_LT(partial["entries"].size(), 4u);
  for (auto& e : fs::directory_iterator(d + "/models")) ADD_FAILURE() << "left behind: " << e.path();

  auto again = run(quote(kEdgeq) + " compare " + kModel + " -o " + d + kSweep);
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.err.find("Q8_0 rtn already measured"), std::string::npos) << again.err;
  EXPECT_EQ(report_without_timings(d).dump(1), report_without_timings(plain).dump(1));
  fs::remove_all(d);
}

TEST(CompareCli, ProgressLinesOffATerminalAndQuiet) {
  if (!have_cli()) GTEST_SKIP() << "edgeq not built";
  const std::string model = edgeq::test::shared("golden/tl-8m-Q4_K_M.gguf");
  auto r = run(quote(kEdgeq) + " perplexity " + model + " -f " + kEval + " --ctx 128 --chunks 20 -t 2");
  ASSERT_EQ(r.code, 0) << r.err;
  // plain lines, one per 10% of the chunks (llama-perplexity prints one per chunk), never a carriage return
  EXPECT_NE(r.err.find("perplexity:  10% [2/20] PPL "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("perplexity: 100% [20/20] PPL "), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find('\r'), std::string::npos);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 11) << r.err;  // the opening note and 10 steps
  auto q = run(quote(kEdgeq) + " perplexity " + model + " -f " + kEval + " --ctx 128 --chunks 2 -t 2 --quiet");
  ASSERT_EQ(q.code, 0);
  EXPECT_EQ(q.err, "");
  EXPECT_NE(q.out.find("Final estimate"), std::string::npos) << q.out;
  auto env0 = run("EDGEQ_PROGRESS=0 " + quote(kEdgeq) + " perplexity " + model + " -f " + kEval + " --ctx 128 --chunks 2 -t 2");
  EXPECT_EQ(env0.err, "");
  const std::string d = temp_dir("conv");
  fs::create_directories(d);
  auto c = run(quote(kEdgeq) + " convert " + kModel + " -o " + d + "/m.gguf");
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_NE(c.err.find("convert: 100% "), std::string::npos) << c.err;
  auto qz = run(quote(kEdgeq) + " quantize " + d + "/m.gguf -o " + d + "/q.gguf --type Q4_K_M --threads 2");
  ASSERT_EQ(qz.code, 0) << qz.err;
  EXPECT_NE(qz.err.find("quantize: 100% [75/75] "), std::string::npos) << qz.err;
  EXPECT_LE(std::count(qz.err.begin(), qz.err.end(), '\n'), 12) << qz.err;  // not one line per tensor
  fs::remove_all(d);
}

TEST(CompareCli, ExistingFilesFormStillWorks) {
  if (!have_cli()) GTEST_SKIP() << "edgeq not built";
  auto r = run(quote(kEdgeq) + " compare " + edgeq::test::shared("golden/tl-8m-F16.gguf") + " " +
               edgeq::test::shared("golden/tl-8m-Q8_0.gguf") + " -f " + kEval + " --chunks 2 -t 2");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("tl-8m-Q8_0.gguf"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("compare: 100% [2/2] tl-8m-Q8_0.gguf"), std::string::npos) << r.err;
  auto bad = run(quote(kEdgeq) + " compare " + kModel + " --eval " + kEval + " --types Q4_K_M");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("need a report directory"), std::string::npos) << bad.err;
  bad = run(quote(kEdgeq) + " compare " + kModel + " --eval " + kEval + " --calib " + kEval);
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("need a report directory"), std::string::npos) << bad.err;
}

// --ref-type f16: the reference is converted to F16 (half the F32 file) and the report says so.
TEST(CompareCli, RefTypeF16MakesAnF16Reference) {
  if (!have_cli()) GTEST_SKIP() << "edgeq not built";
  const std::string d = temp_dir("f16");
  auto r = run(quote(kEdgeq) + " compare " + kModel + " -o " + d + " --eval " + kEval +
               " --types Q8_0,Q4_K_M --ctx 128 --chunks 2 -t 2 --ref-type f16 --keep");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(slurp(d + "/report.json"));
  EXPECT_EQ(j["reference"]["file_type"], "F16");
  EXPECT_EQ(j["reference"]["reference_choice"], "F16, as asked (--ref-type f16)");
  EXPECT_NEAR(j["reference"]["bits_per_weight"].get<double>(), 16.0, 0.1);
  EXPECT_NE(slurp(d + "/report.md").find("Reference: F16, as asked (--ref-type f16)."), std::string::npos);
  EXPECT_NE(r.out.find("| F16 (ref) "), std::string::npos) << r.out;
  const auto ref_bytes = fs::file_size(d + "/work/reference.gguf");
  EXPECT_LT(ref_bytes, 18u << 20);  // F32 would be 32 MiB
  EXPECT_GT(ref_bytes, 16u << 20);
  // measured against the F16 reference: Q8_0 is close to it, Q4_K_M further away
  ASSERT_EQ(j["entries"].size(), 2u);
  const double q8 = j["entries"][0]["mean_kld"], q4 = j["entries"][1]["mean_kld"];
  EXPECT_GT(q8, 0.0);
  EXPECT_LT(q8 * 5, q4);
  // the auto choice for this small model is F32, a different reference: nothing is reused
  auto again = run(quote(kEdgeq) + " compare " + kModel + " -o " + d + " --eval " + kEval +
                   " --types Q8_0 --ctx 128 --chunks 2 -t 2 --quiet");
  ASSERT_EQ(again.code, 0) << again.err;
  j = nlohmann::json::parse(slurp(d + "/report.json"));
  EXPECT_EQ(j["reference"]["file_type"], "F32");
  EXPECT_EQ(j["reference"]["reference_choice"].get<std::string>().rfind("F32 (auto: 1.5 x its 32.0 MiB fits", 0), 0u)
      << j["reference"]["reference_choice"];
  auto bad = run(quote(kEdgeq) + " compare " + kModel + " -o " + d + " --eval " + kEval + " --ref-type f64");
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("--ref-type"), std::string::npos) << bad.err;
  fs::remove_all(d);
}

// --help names the calibrated methods and flags; --plan carries the calibration into each entry's command,
// and a planned calibrated entry run alone writes the result the plan announced.
TEST(CompareCli, CalibratedMethodsInHelpAndPlan) {
  if (!have_cli()) GTEST_SKIP() << "edgeq not built";
  auto help = run(quote(kEdgeq) + " compare --help");
  ASSERT_EQ(help.code, 0);
  for (auto s : {"--calib ", "--calib-chunks", "--ref-type", "awq:", "gptq:", "auto:", "imatrix:", "MemAvailable"})
    EXPECT_NE(help.out.find(s), std::string::npos) << s;
  const std::string d = temp_dir("calplan");
  const std::string calib = edgeq::test::shared("text/calib.txt");
  auto plan = run(quote(kEdgeq) + " compare " + kModel + " -o " + d + " --eval " + kEval + " --calib " + calib +
                  " --calib-chunks 3 --types Q4_K_M --methods rtn,gptq --ctx 128 --chunks 2 -t 2 --plan");
  ASSERT_EQ(plan.code, 0) << plan.err;
  std::istringstream lines(plan.out);
  std::vector<nlohmann::json> js;
  for (std::string line; std::getline(lines, line);) js.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(js.size(), 2u);
  EXPECT_EQ(js[1]["entry"], "Q4_K_M-gptq");
  const auto cmd = js[1]["command"].get<std::vector<std::string>>();
  auto after = [&](const std::string& flag) {
    auto it = std::find(cmd.begin(), cmd.end(), flag);
    return it == cmd.end() || it + 1 == cmd.end() ? std::string() : *(it + 1);
  };
  EXPECT_EQ(after("--calib"), calib);
  EXPECT_EQ(after("--calib-chunks"), "3");
  std::string line = "cd " + quote(js[1]["cwd"]) + " &&";
  for (auto& a : cmd) {
    line.push_back(' ');
    line.append(quote(a));
  }
  auto r = run(line);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("calibration: calibrate"), std::string::npos) << r.err;
  auto res = nlohmann::json::parse(slurp(js[1]["result"].get<std::string>()));
  EXPECT_EQ(res["entry"]["key"], js[1]["key"]);
  EXPECT_EQ(res["entry"]["method"], "gptq");
  EXPECT_GT(res["entry"]["mean_kld"].get<double>(), 0.0);
  fs::remove_all(d);
}
