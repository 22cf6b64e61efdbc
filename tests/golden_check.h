// The tolerances at which edgeq's perplexity and KL-divergence figures must match llama-perplexity's goldens
// (../shared/golden/perplexity.json: b4748, AVX2 build, n_ctx 256, tinystories-heldout.txt, KLD against the F32
// model). One table for tests/test_perplexity_goldens.cpp and bench_runtime --check-goldens; every shipped
// golden is held to it, with no per-file exception. Header-only (tests and bench include it).
#pragma once
#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "edgeq/runtime/perplexity.h"

namespace edgeq::golden {

struct Figure {
  std::string key;
  double got = 0, want = 0, tol = 0;
  bool ok() const { return std::fabs(got - want) <= tol; }
};

// PPL within 0.2% for F32/F16/Q8_0 (no or near-lossless quantization) and 1% for the other types, its ± within
// 1%; with KLD: mean, median and p99 KLD and RMS delta-p within 10% relative (absolute floors 1e-5 and 0.01
// percentage points: the goldens print 6 decimals and the F16 figures are ~0), same top p within 1 percentage
// point, PPL(Q)/PPL(base) within 0.002.
inline std::vector<Figure> compare(const std::string& name, const nlohmann::json& g, const runtime::PerplexityResult& r) {
  const bool tight = name.find("F32") != std::string::npos || name.find("F16") != std::string::npos ||
                     name.find("Q8_0") != std::string::npos;
  auto rel = [&](const char* key, double got, double frac, double floor) {
    const double want = g.at(key).get<double>();
    return Figure{key, got, want, std::max(frac * std::fabs(want), floor)};
  };
  std::vector<Figure> f;
  f.push_back(rel("ppl", r.ppl, tight ? 0.002 : 0.01, 0));
  f.push_back(rel("ppl_err", r.ppl_err, 0.01, 0));
  if (r.kld && g.contains("mean_kld")) {
    const auto& k = *r.kld;
    f.push_back(rel("mean_kld", k.mean_kld, 0.10, 1e-5));
    f.push_back(rel("median_kld", k.median_kld, 0.10, 1e-5));
    f.push_back(rel("p99_kld", k.p99_kld, 0.10, 1e-5));
    f.push_back(rel("rms_dp_pct", k.rms_dp_pct, 0.10, 0.01));
    f.push_back(rel("same_top_p_pct", k.same_top_pct, 0, 1.0));
    f.push_back(rel("ppl_ratio", k.ppl_ratio, 0, 0.002));
  }
  return f;
}

// llama.cpp's token ids of tinystories-heldout.txt for one vocabulary (golden/tokens/heldout-tokens.json, keyed
// by the GGUF file the ids came from); empty when the file has no such case. Needs EDGEQ_SHARED_DIR.
inline const std::vector<int32_t>& heldout_tokens(const std::string& vocab) {
  static const nlohmann::json j = [] {
    std::ifstream f(std::string(EDGEQ_SHARED_DIR) + "/golden/tokens/heldout-tokens.json");
    return nlohmann::json::parse(f);
  }();
  static std::map<std::string, std::vector<int32_t>> cache;
  auto it = cache.find(vocab);
  if (it != cache.end()) return it->second;
  auto& v = cache[vocab];
  for (const auto& c : j.at("cases"))
    if (c.at("vocab") == vocab) v = c.at("ids").get<std::vector<int32_t>>();
  return v;
}

}  // namespace edgeq::golden
