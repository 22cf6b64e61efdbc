// `edgeq quantize --target-size / --target-bpw` (compare/budget.h), --plan / --budget-job / --merge: the options
// cmd_quantize.cpp adds, and the run.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace edgeq::cli {

struct BudgetFlags {
  std::string target_size, types, cache, plan, job;
  double target_bpw = 0;
  int64_t chunks = 2, shards = 0, ctx = 256, calib_chunks = -1;
  bool merge = false;
  bool active() const { return !target_size.empty() || target_bpw > 0 || !plan.empty() || !job.empty() || merge; }
};
void add_budget_options(CLI::App* sub, BudgetFlags& f);

struct BudgetRunArgs {
  std::string src, out, method;
  std::vector<std::string> data;
  int threads = 0;
  bool json = false, record_metadata = true;
};
// Runs the budget mode; `other_flags` names a flag of the fixed mixes given as well (refused), empty if none.
int run_budget(const BudgetFlags& f, const BudgetRunArgs& a, const std::string& other_flags);

}  // namespace edgeq::cli
