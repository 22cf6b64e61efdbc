// A plan through a real Slurm: scripts/slurm-local.sh starts a single-node cluster (munged, slurmctld, slurmd
// from Debian's slurm-wlm and munge) on localhost, scripts/slurm-run-plan.sh runs an `edgeq compare --plan`
// through it as an sbatch array and merges, and the merged report equals the same plan run locally (each line
// by scripts/plan-line.sh, then the same merge) apart from timings. A failing line is named with its logs and
// stops the merge. The cluster is stopped in every case: by the guard below, and by the script's own watchdog
// should this process die (--owner, --max-seconds).
// Skipped (with the reason) only when Slurm or munge is not installed or the test does not run as root.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "test_helpers.h"

namespace fs = std::filesystem;
using edgeq::test::read_text;
using edgeq::test::run_shell;

namespace {

const std::string kEdgeq = std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq";
const std::string kScripts = std::string(EDGEQ_SOURCE_DIR) + "/scripts";
const std::string kEval = std::string(EDGEQ_SOURCE_DIR) + "/data/eval.txt";

std::string quote(const std::string& s) {
  std::string o = "'";
  for (char c : s) o += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return o + "'";
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

nlohmann::json without_timings(nlohmann::json j) {
  j["reference"].erase("eval_seconds");
  for (auto& e : j["entries"])
    for (auto k : {"quantize_seconds", "eval_seconds", "eval_tokens_per_second"}) e.erase(k);
  return j;
}

// The cluster of one test: started by scripts/slurm-local.sh in a run directory of its own, stopped by stop()
// or, whatever happens, when the guard goes away.
struct LocalSlurm {
  std::string run_dir, conf, start_err;
  bool started = false;
  explicit LocalSlurm(std::string dir) : run_dir(std::move(dir)) {
    auto r = run_shell(env() + " bash " + quote(kScripts + "/slurm-local.sh") + " start --owner " +
                       std::to_string(getpid()) + " --max-seconds 150");
    start_err = r.err;
    const std::string key = "export SLURM_CONF=";
    const size_t at = r.out.find(key);
    if (r.code == 0 && at != std::string::npos) {
      conf = r.out.substr(at + key.size(), r.out.find('\n', at) - at - key.size());
      started = true;
    }
  }
  std::string env() const { return "EDGEQ_SLURM_DIR=" + quote(run_dir) + (conf.empty() ? "" : " SLURM_CONF=" + quote(conf)); }
  edgeq::test::CmdResult stop() {
    started = false;
    return run_shell(env() + " bash " + quote(kScripts + "/slurm-local.sh") + " stop");
  }
  ~LocalSlurm() {
    if (fs::exists(run_dir)) stop();
  }
};

bool have(const char* program) { return run_shell(std::string("command -v ") + program + " >/dev/null").code == 0; }

// The pid in a daemon's pid file, 0 when there is none.
pid_t pid_in(const std::string& file) {
  std::istringstream in(read_text(file));
  pid_t p = 0;
  in >> p;
  return p;
}

TEST(Slurm, PlanOnALocalClusterEqualsTheLocalRun) {
  for (const char* p : {"munged", "slurmctld", "slurmd", "sbatch", "squeue", "jq"})
    if (!have(p)) GTEST_SKIP() << p << " not installed: scripts/setup.sh installs slurm-wlm, munge and jq";
  if (geteuid() != 0) GTEST_SKIP() << "a local Slurm (SlurmUser=root) needs root";
  ASSERT_TRUE(fs::exists(kEdgeq)) << "edgeq not built: " << kEdgeq;
  const auto t_all = std::chrono::steady_clock::now();
  edgeq::test::TempDir tmp;
  const std::string out = tmp.file("sweep"), plan = tmp.file("plan.jsonl");
  const std::string model = edgeq::test::shared("models/stories260K");

  // The plan: three entries of a small sweep (stories260K, 4 chunks of 128 tokens).
  auto p = run_shell("cd " + quote(tmp.path.string()) + " && " + quote(kEdgeq) + " compare " + quote(model) + " -o " +
                     quote(out) + " --eval " + quote(kEval) +
                     " --types Q8_0,Q5_1,Q4_0 --ctx 128 --chunks 4 -t 1 --plan > " + quote(plan));
  ASSERT_EQ(p.code, 0) << p.err;
  const std::string merge = quote(kEdgeq) + " compare --merge " + quote(out + "/results") + " -o " + quote(out);

  // Locally: every line by plan-line.sh, then the merge.
  for (int i = 0; i < 3; ++i) {
    auto r = run_shell("bash " + quote(kScripts + "/plan-line.sh") + " " + quote(plan) + " " + std::to_string(i));
    ASSERT_EQ(r.code, 0) << "line " << i + 1 << ": " << r.err;
  }
  EXPECT_NE(run_shell("bash " + quote(kScripts + "/plan-line.sh") + " " + quote(plan) + " 3").code, 0) << "no line 4";
  auto m = run_shell(merge + " >/dev/null");
  ASSERT_EQ(m.code, 0) << m.err;
  const auto local = nlohmann::json::parse(read_text(out + "/report.json"));
  ASSERT_EQ(local["entries"].size(), 3u);
  fs::remove_all(out);  // the Slurm run starts from nothing: it makes the reference again

  // The cluster (in a short path: munge's socket lives there).
  const auto t_start = std::chrono::steady_clock::now();
  LocalSlurm slurm(fs::temp_directory_path() / ("edgeq-slurm-test-" + std::to_string(getpid())));
  ASSERT_TRUE(slurm.started) << slurm.start_err;
  const double start_s = seconds_since(t_start);
  const std::string run = slurm.env() + " bash " + quote(kScripts + "/slurm-run-plan.sh") + " ";

  // The plan as an sbatch array (the first entry alone: it makes the reference the others reuse), then the merge.
  const auto t_plan = std::chrono::steady_clock::now();
  auto r = run_shell("cd " + quote(tmp.path.string()) + " && " + run + quote(plan) + " --first-alone --max-wait 60 --merge " +
                     quote(merge + " >/dev/null"));
  const double plan_s = seconds_since(t_plan);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("all 3 tasks succeeded"), std::string::npos) << r.err;
  // each task ran under Slurm: the batch script recorded its status beside the task's logs
  std::string logs;
  for (auto& e : fs::directory_iterator(plan + ".logs")) logs = e.path().string();
  ASSERT_FALSE(logs.empty());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(read_text(logs + "/task-" + std::to_string(i) + ".rc"), "0\n") << i;
    EXPECT_NE(read_text(logs + "/task-" + std::to_string(i) + ".err").find("line " + std::to_string(i + 1) + " on "),
              std::string::npos);
  }

  const auto slurm_report = nlohmann::json::parse(read_text(out + "/report.json"));
  EXPECT_EQ(without_timings(slurm_report).dump(1), without_timings(local).dump(1));
  // the numbers are real measurements: a finite reference, KLD growing as the bits shrink
  const auto& e = slurm_report["entries"];
  ASSERT_EQ(e.size(), 3u);
  std::map<std::string, double> kld;
  for (auto& x : e) kld[x["type"].get<std::string>()] = x["mean_kld"].get<double>();
  EXPECT_GT(slurm_report["reference"]["ppl"].get<double>(), 1.0);
  EXPECT_GT(kld["Q8_0"], 0.0);
  EXPECT_LT(kld["Q8_0"], kld["Q5_1"]);
  EXPECT_LT(kld["Q5_1"], kld["Q4_0"]);

  // A failing line: named with its exit status and logs, the line that never ran too, and no merge.
  const std::string bad = tmp.file("bad.txt");
  {
    std::ofstream f(bad);
    f << "true\necho broken >&2; exit 3\n";
  }
  const std::string marker = tmp.file("merged");
  auto b = run_shell(run + quote(bad) + " --max-wait 30 --merge " + quote("touch " + quote(marker)));
  EXPECT_EQ(b.code, 1);
  EXPECT_NE(b.err.find("task 1 (line 2) failed with exit status 3"), std::string::npos) << b.err;
  EXPECT_NE(b.err.find("task-1.err"), std::string::npos) << b.err;
  EXPECT_NE(b.err.find("broken"), std::string::npos) << b.err;
  EXPECT_NE(b.err.find("1 of 2 tasks failed; no merge"), std::string::npos) << b.err;
  EXPECT_FALSE(fs::exists(marker));

  // Stop: the daemons it started are gone, and so is the run directory.
  std::vector<pid_t> pids;
  for (auto f : {"munged.pid", "slurmctld.pid", "slurmd.pid", "watchdog.pid"}) {
    pids.push_back(pid_in(slurm.run_dir + "/" + f));
    EXPECT_GT(pids.back(), 0) << f;
  }
  const auto t_stop = std::chrono::steady_clock::now();
  auto s = slurm.stop();
  EXPECT_EQ(s.code, 0) << s.err;
  const double stop_s = seconds_since(t_stop);
  for (pid_t pid : pids) {
    if (pid > 0) {
      EXPECT_FALSE(fs::exists("/proc/" + std::to_string(pid))) << "still running: " << pid;
    }
  }
  EXPECT_FALSE(fs::exists(slurm.run_dir));
  const double all_s = seconds_since(t_all);
  std::printf("slurm: start %.1f s, plan of 3 + merge %.1f s, stop %.1f s, whole test %.1f s\n", start_s, plan_s, stop_s,
              all_s);
  EXPECT_LT(all_s, 60.0) << "the test must stay well within .ci/run's budget";
}

}  // namespace
