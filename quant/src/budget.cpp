#include "edgeq/quant/budget.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <string>

#include "edgeq/base/error.h"

namespace edgeq::quant {

namespace {

void check_groups(const std::vector<BudgetGroup>& groups, uint64_t budget) {
  uint64_t min_bytes = 0;
  for (auto& g : groups) {
    if (g.options.empty()) fail("budget: tensor group {} has no type to choose", g.name);
    if (g.options.size() > 255) fail("budget: tensor group {} has more than 255 options", g.name);
    uint64_t m = std::numeric_limits<uint64_t>::max();
    for (auto& o : g.options) m = std::min(m, o.bytes);
    min_bytes += m;
  }
  if (min_bytes > budget)
    fail("budget: {} bytes of tensor data do not fit: the smallest types allowed need {} bytes", budget, min_bytes);
}

void total(const std::vector<BudgetGroup>& groups, BudgetSolution& s) {
  s.bytes = 0;
  s.cost = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    s.bytes += groups[g].options[s.choice[g]].bytes;
    s.cost += groups[g].options[s.choice[g]].cost;
  }
}

// Applies single-group changes that fit the budget, the one of highest score(current, candidate) first, until
// none scores above 0. The running totals are refreshed after each change.
template <class Score>
void apply_best_moves(const std::vector<BudgetGroup>& groups, uint64_t budget, BudgetSolution& s, Score score) {
  for (;;) {
    total(groups, s);
    double best = 0;
    size_t bg = 0, bo = 0;
    for (size_t g = 0; g < groups.size(); ++g) {
      const BudgetOption& cur = groups[g].options[s.choice[g]];
      for (size_t o = 0; o < groups[g].options.size(); ++o) {
        const BudgetOption& c = groups[g].options[o];
        if (s.bytes - cur.bytes + c.bytes > budget) continue;
        const double v = score(cur, c);
        if (v > best) {
          best = v;
          bg = g;
          bo = o;
        }
      }
    }
    if (best <= 0) return;
    s.choice[bg] = bo;
  }
}

// Single-group changes that lower the cost and fit the remaining bytes, best first, until none does.
void improve(const std::vector<BudgetGroup>& groups, uint64_t budget, BudgetSolution& s) {
  apply_best_moves(groups, budget, s, [](const BudgetOption& cur, const BudgetOption& c) { return cur.cost - c.cost; });
}

}  // namespace

BudgetSolution solve_budget_greedy(const std::vector<BudgetGroup>& groups, uint64_t budget) {
  check_groups(groups, budget);
  BudgetSolution s;
  s.choice.resize(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    size_t m = 0;
    for (size_t o = 1; o < groups[g].options.size(); ++o) {
      const auto& a = groups[g].options[o];
      const auto& b = groups[g].options[m];
      if (a.bytes < b.bytes || (a.bytes == b.bytes && a.cost < b.cost)) m = o;
    }
    s.choice[g] = m;
  }
  // Upgrades along each group's lower convex hull: the best cost decrease per extra byte first.
  apply_best_moves(groups, budget, s, [](const BudgetOption& cur, const BudgetOption& c) {
    if (c.bytes <= cur.bytes || c.cost >= cur.cost) return 0.0;
    return (cur.cost - c.cost) / double(c.bytes - cur.bytes);
  });
  improve(groups, budget, s);
  total(groups, s);
  return s;
}

BudgetSolution solve_budget(const std::vector<BudgetGroup>& groups, uint64_t budget) {
  check_groups(groups, budget);
  constexpr uint64_t kUnits = uint64_t(1) << 17;
  const uint64_t q = std::max<uint64_t>(1, (budget + kUnits - 1) / kUnits);
  const size_t U = static_cast<size_t>(budget / q);
  const double inf = std::numeric_limits<double>::infinity();
  // dp[u]: the lowest cost of the groups so far within u quanta; pick[g][u]: the option taken for group g.
  std::vector<double> dp(U + 1, 0.0), next(U + 1);
  std::vector<std::vector<uint8_t>> pick(groups.size(), std::vector<uint8_t>(U + 1, 0));
  for (size_t g = 0; g < groups.size(); ++g) {
    std::fill(next.begin(), next.end(), inf);
    for (size_t o = 0; o < groups[g].options.size(); ++o) {
      const auto& opt = groups[g].options[o];
      const uint64_t w = (opt.bytes + q - 1) / q;
      if (w > U) continue;
      for (size_t u = w; u <= U; ++u) {
        const double c = dp[u - w] + opt.cost;
        if (c < next[u]) {
          next[u] = c;
          pick[g][u] = static_cast<uint8_t>(o);
        }
      }
    }
    dp.swap(next);
  }
  BudgetSolution s;
  s.choice.assign(groups.size(), 0);
  if (!std::isfinite(dp[U])) return solve_budget_greedy(groups, budget);  // rounding lost the only fit
  size_t u = U;
  for (size_t g = groups.size(); g-- > 0;) {
    const size_t o = pick[g][u];
    s.choice[g] = o;
    u -= static_cast<size_t>((groups[g].options[o].bytes + q - 1) / q);
  }
  improve(groups, budget, s);
  total(groups, s);
  // The rounding can cost a little: never return worse than the greedy solution.
  BudgetSolution gr = solve_budget_greedy(groups, budget);
  return gr.cost < s.cost ? gr : s;
}

uint64_t parse_byte_size(std::string_view text, std::string_view flag) {
  std::string t(text);
  size_t i = 0;
  while (i < t.size() && (std::isdigit(static_cast<unsigned char>(t[i])) || t[i] == '.')) ++i;
  std::string num = t.substr(0, i), unit = t.substr(i);
  if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b')) unit.pop_back();
  double mult = 1;
  if (unit.empty()) mult = 1;
  else if (unit == "K" || unit == "k") mult = 1e3;
  else if (unit == "M") mult = 1e6;
  else if (unit == "G") mult = 1e9;
  else if (unit == "T") mult = 1e12;
  else if (unit == "Ki") mult = 1024.0;
  else if (unit == "Mi") mult = 1024.0 * 1024;
  else if (unit == "Gi") mult = 1024.0 * 1024 * 1024;
  else if (unit == "Ti") mult = 1024.0 * 1024 * 1024 * 1024;
  else fail("{} {}: a size is a number with an optional unit K, M, G, T (powers of 1000) or Ki, Mi, Gi, Ti", flag, text);
  double v = 0;
  try {
    size_t used = 0;
    v = num.empty() ? -1 : std::stod(num, &used);
    if (used != num.size()) v = -1;
  } catch (...) {
    v = -1;
  }
  const double bytes = std::floor(v * mult);
  if (!(bytes >= 1) || bytes > 1e18) fail("{} {}: not a positive size in bytes", flag, text);
  return static_cast<uint64_t>(bytes);
}

}  // namespace edgeq::quant
