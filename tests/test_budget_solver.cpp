// quant/budget.h: the multiple-choice knapsack behind --target-size, against exhaustive search.
#include <gtest/gtest.h>

#include <random>

#include "edgeq/base/error.h"
#include "edgeq/quant/budget.h"

namespace q = edgeq::quant;

namespace {

// The exact optimum by enumeration (groups^options small).
double brute_force(const std::vector<q::BudgetGroup>& g, uint64_t budget) {
  double best = std::numeric_limits<double>::infinity();
  std::vector<size_t> c(g.size(), 0);
  for (;;) {
    uint64_t b = 0;
    double cost = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      b += g[i].options[c[i]].bytes;
      cost += g[i].options[c[i]].cost;
    }
    if (b <= budget) best = std::min(best, cost);
    size_t i = 0;
    while (i < g.size() && ++c[i] == g[i].options.size()) c[i++] = 0;
    if (i == g.size()) return best;
  }
}

// Groups shaped like a model's tensors: cost falls roughly exponentially with bytes, with noise (so hulls are
// not always convex).
std::vector<q::BudgetGroup> random_groups(std::mt19937& rng, size_t n, size_t k) {
  std::uniform_int_distribution<uint64_t> sz(1000, 100000);
  std::uniform_real_distribution<double> u(0.2, 1.8);
  std::vector<q::BudgetGroup> g(n);
  for (size_t i = 0; i < n; ++i) {
    g[i].name = "t" + std::to_string(i);
    const uint64_t base = sz(rng);
    const double sens = u(rng);
    for (size_t o = 0; o < k; ++o) {
      const double bits = 2.0 + 1.1 * double(o);
      g[i].options.push_back({edgeq::GgmlType::Q4_K, uint64_t(double(base) * bits / 8.0),
                              sens * std::exp(-1.3 * bits) * u(rng)});
    }
  }
  return g;
}

}  // namespace

TEST(BudgetSolver, EqualsExhaustiveSearchAndNeverExceedsTheBudget) {
  std::mt19937 rng(7);
  int dp_better_than_greedy = 0;
  for (int trial = 0; trial < 30; ++trial) {
    auto g = random_groups(rng, 6, 4);
    uint64_t lo = 0, hi = 0;
    for (auto& x : g) {
      lo += x.options.front().bytes;
      hi += x.options.back().bytes;
    }
    const uint64_t budget = lo + (hi - lo) * uint64_t(trial % 10 + 1) / 11;
    const auto s = q::solve_budget(g, budget);
    const auto gr = q::solve_budget_greedy(g, budget);
    ASSERT_LE(s.bytes, budget);
    ASSERT_LE(gr.bytes, budget);
    const double best = brute_force(g, budget);
    // The DP works on bytes rounded up to budget/2^17: for these sizes the rounding can cost at most a
    // hair; it must be the exact optimum within 1e-9 relative here.
    EXPECT_NEAR(s.cost, best, 1e-9 * best) << "trial " << trial;
    EXPECT_LE(s.cost, gr.cost + 1e-15);
    if (s.cost < gr.cost * (1 - 1e-9)) ++dp_better_than_greedy;
    // The reported totals are the choice's.
    uint64_t b = 0;
    double c = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      b += g[i].options[s.choice[i]].bytes;
      c += g[i].options[s.choice[i]].cost;
    }
    EXPECT_EQ(b, s.bytes);
    EXPECT_DOUBLE_EQ(c, s.cost);
  }
  // The greedy alone is not optimal on these non-convex instances: the exact fill matters.
  EXPECT_GT(dp_better_than_greedy, 0);
}

TEST(BudgetSolver, FillsLargeInstancesToTheByte) {
  std::mt19937 rng(11);
  auto g = random_groups(rng, 120, 8);
  uint64_t lo = 0, hi = 0;
  for (auto& x : g) {
    lo += x.options.front().bytes;
    hi += x.options.back().bytes;
  }
  const uint64_t budget = (lo + hi) / 2;
  const auto s = q::solve_budget(g, budget);
  EXPECT_LE(s.bytes, budget);
  EXPECT_GT(double(s.bytes), 0.999 * double(budget));  // within 0.1% of the budget
  EXPECT_LE(s.cost, q::solve_budget_greedy(g, budget).cost);
}

TEST(BudgetSolver, RefusesABudgetBelowTheSmallestTypes) {
  std::vector<q::BudgetGroup> g = {{"a", {{edgeq::GgmlType::Q2_K, 100, 1.0}, {edgeq::GgmlType::Q4_K, 200, 0.5}}},
                                   {"b", {{edgeq::GgmlType::Q2_K, 50, 1.0}}}};
  EXPECT_THROW(q::solve_budget(g, 149), edgeq::Error);
  const auto s = q::solve_budget(g, 150);
  EXPECT_EQ(s.choice[0], 0u);
  EXPECT_EQ(q::solve_budget(g, 250).choice[0], 1u);
  g.push_back({"c", {}});
  EXPECT_THROW(q::solve_budget(g, 1000), edgeq::Error);
}

TEST(BudgetSolver, ParsesByteSizes) {
  EXPECT_EQ(q::parse_byte_size("3620544", "--target-size"), 3620544u);
  EXPECT_EQ(q::parse_byte_size("3.6M", "--target-size"), 3600000u);
  EXPECT_EQ(q::parse_byte_size("2G", "--target-size"), 2000000000u);
  EXPECT_EQ(q::parse_byte_size("2GiB", "--target-size"), 2147483648u);
  EXPECT_EQ(q::parse_byte_size("512Ki", "--target-size"), 524288u);
  EXPECT_EQ(q::parse_byte_size("1.5kB", "--target-size"), 1500u);
  for (const char* bad : {"", "G", "-1", "0", "1.2.3M", "3X", "1e5"}) EXPECT_THROW(q::parse_byte_size(bad, "--target-size"), edgeq::Error) << bad;
}
