// Budget mixes (`edgeq quantize --target-size / --target-bpw`): choose one block type per tensor group so that the
// tensor bytes fit a budget and the predicted cost (the sum of the groups' costs: an additive model of the file's
// KL divergence, measured by compare/budget.h) is lowest. A multiple-choice knapsack; pure arithmetic, no I/O.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "edgeq/formats/ggml_types.h"

namespace edgeq::quant {

struct BudgetOption {
  GgmlType type = GgmlType::F32;
  uint64_t bytes = 0;  // the group's tensor bytes in this type
  double cost = 0;     // predicted contribution (ΔKLD), >= 0
};
struct BudgetGroup {
  std::string name;
  std::vector<BudgetOption> options;  // at least one
};
struct BudgetSolution {
  std::vector<size_t> choice;  // option index per group
  uint64_t bytes = 0;
  double cost = 0;
};

// The cheapest choice (one option per group) with total bytes <= budget. Exact up to a byte quantum of
// budget / 2^17 (dynamic programming over the scaled byte axis, item sizes rounded up, so the result never
// exceeds the budget), then improved by single-group swaps that fit the exact remaining bytes. Throws
// edgeq::Error when even the smallest option of every group does not fit, or a group has no option.
BudgetSolution solve_budget(const std::vector<BudgetGroup>& groups, uint64_t budget);

// The Lagrangian (convex-hull greedy) solution: from the smallest options, repeatedly take the upgrade with the
// best cost decrease per byte that still fits. Fast and close to optimal; solve_budget is never worse (tested).
BudgetSolution solve_budget_greedy(const std::vector<BudgetGroup>& groups, uint64_t budget);

// "3620544", "3.6M", "2.0G", "2GiB", "512K": K/M/G/T are powers of 1000, Ki/Mi/Gi/Ti powers of 1024 (an optional
// trailing B). Throws edgeq::Error naming the flag for anything else or zero.
uint64_t parse_byte_size(std::string_view text, std::string_view flag);

}  // namespace edgeq::quant
