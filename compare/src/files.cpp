#include "edgeq/compare/files.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "edgeq/base/error.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/formats/palette_layout.h"
#include "edgeq/formats/text_input.h"
#include "edgeq/quant/policy.h"
#include "edgeq/runtime/model.h"
#include "edgeq/runtime/tokenizer.h"

namespace edgeq::compare {

using namespace edgeq::runtime;

namespace {

}  // namespace

CompareRow describe_model(const Model& m) {
  CompareRow row;
  const auto& f = m.gguf();
  row.path = m.path();
  row.file_bytes = f.file_size();
  const palette::DataSize size = palette::data_size(f);  // palettized weights count their logical parameters
  row.parameters = size.parameters;
  row.bits_per_weight = size.bits_per_weight();
  const char* ft_name = "?";
  if (auto ft = f.get_int("general.file_type")) {
    for (auto& info : quant::file_types())
      if (static_cast<int64_t>(info.ftype) == *ft) ft_name = info.name;
  }
  row.file_type = std::string(ft_name);
  return row;
}

namespace {

// A KLD base file in a private temp directory, removed when done.
struct TempBase {
  std::filesystem::path dir;
  TempBase() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "edgeq-compare-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) fail("cannot create a temporary directory for the reference log-probabilities");
    dir = tmpl;
  }
  ~TempBase() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  std::string file() const { return (dir / "base.kld").string(); }
};

}  // namespace

namespace {
// What every model's run shares: context, chunks, threads and the progress callback.
PerplexityOptions perplexity_options(const CompareOptions& opt) {
  PerplexityOptions po;
  po.n_ctx = opt.n_ctx;
  po.max_chunks = opt.max_chunks;
  po.n_threads = opt.n_threads;
  po.progress = opt.progress;
  return po;
}
}  // namespace

CompareReport compare_models(const std::string& base, const std::vector<std::string>& candidates,
                             const std::string& text_path, const CompareOptions& opt) {
  if (candidates.empty()) fail("compare: no candidate models given");
  CompareReport rep;
  rep.text_path = text_path;
  TempBase tmp;
  std::vector<int32_t> tokens;
  int64_t base_vocab = 0;
  {
    if (opt.on_model) opt.on_model(0, base);
    const auto model = Model::load(base);
    const auto tok = Tokenizer::from_gguf(model.gguf());
    tokens = tok.tokenize(read_text_input(text_path), true, false);
    base_vocab = static_cast<int64_t>(tok.n_vocab());
    PerplexityOptions po = perplexity_options(opt);
    po.kld_base_out = tmp.file();
    rep.base = describe_model(model);
    rep.base.result = perplexity(model, tokens, tok.add_bos(), tok.bos(), po);
    rep.n_ctx = rep.base.result.n_ctx;
    rep.n_chunks = rep.base.result.n_chunks;
    rep.scored = rep.base.result.count;
  }
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (opt.on_model) opt.on_model(i + 1, candidates[i]);
    const auto model = Model::load(candidates[i]);
    const auto tok = Tokenizer::from_gguf(model.gguf());
    if (static_cast<int64_t>(tok.n_vocab()) != base_vocab)
      fail("{}: vocabulary of {} tokens differs from the reference {} ({} tokens)", candidates[i], tok.n_vocab(), base,
           base_vocab);
    PerplexityOptions po = perplexity_options(opt);
    po.kld_in = tmp.file();
    CompareRow row = describe_model(model);
    row.result = perplexity(model, tokens, tok.add_bos(), tok.bos(), po);
    rep.candidates.push_back(std::move(row));
  }
  return rep;
}

nlohmann::json compare_to_json(const CompareReport& r) {
  auto row_json = [](const CompareRow& c) {
    nlohmann::json j = {{"path", c.path},
                        {"file_type", c.file_type},
                        {"file_bytes", c.file_bytes},
                        {"parameters", c.parameters},
                        {"bits_per_weight", c.bits_per_weight},
                        {"ppl", c.result.ppl},
                        {"ppl_err", c.result.ppl_err},
                        {"seconds", c.result.seconds}};
    if (c.result.kld) {
      const auto& k = *c.result.kld;
      j["ppl_ratio"] = k.ppl_ratio;
      j["ppl_ratio_err"] = k.ppl_ratio_err;
      j["mean_kld"] = k.mean_kld;
      j["mean_kld_err"] = k.mean_kld_err;
      j["median_kld"] = k.median_kld;
      j["p99_kld"] = k.p99_kld;
      j["max_kld"] = k.max_kld;
      j["same_top_p_pct"] = k.same_top_pct;
      j["rms_dp_pct"] = k.rms_dp_pct;
      j["mean_dp_pct"] = k.mean_dp_pct;
    }
    return j;
  };
  nlohmann::json j;
  j["text"] = r.text_path;
  j["n_ctx"] = r.n_ctx;
  j["n_chunks"] = r.n_chunks;
  j["scored_tokens"] = r.scored;
  j["base"] = row_json(r.base);
  j["candidates"] = nlohmann::json::array();
  for (auto& c : r.candidates) j["candidates"].push_back(row_json(c));
  return j;
}

std::string render_compare(const CompareReport& r) {
  std::string o = fmt::format("{} scored tokens of {} ({} chunks of {}); reference {}\n\n", r.scored, r.text_path,
                              r.n_chunks, r.n_ctx, r.base.path);
  o += fmt::format("{:<36} {:>7} {:>9} {:>6} {:>19} {:>8} {:>10} {:>9} {:>8} {:>7}\n", "model", "type", "size MiB", "BPW",
                   "PPL", "ΔPPL %", "mean KLD", "p99 KLD", "top-1 %", "RMS Δp");
  auto name = [](const std::string& p) {
    std::string s = std::filesystem::path(p).filename().string();
    if (s.size() > 36) {
      s.resize(33);
      s.append("...");
    }
    return s;
  };
  const CompareRow& b = r.base;
  o += fmt::format("{:<36} {:>7} {:>9.2f} {:>6.2f} {:>10.4f} ± {:<6.4f} {:>8} {:>10} {:>9} {:>8} {:>7}\n", name(b.path),
                   b.file_type, static_cast<double>(b.file_bytes) / (1 << 20), b.bits_per_weight, b.result.ppl,
                   b.result.ppl_err, "ref", "", "", "", "");
  for (auto& c : r.candidates) {
    const auto& k = *c.result.kld;
    o += fmt::format("{:<36} {:>7} {:>9.2f} {:>6.2f} {:>10.4f} ± {:<6.4f} {:>+8.3f} {:>10.6f} {:>9.5f} {:>8.2f} {:>6.3f}%\n",
                     name(c.path), c.file_type, static_cast<double>(c.file_bytes) / (1 << 20), c.bits_per_weight,
                     c.result.ppl, c.result.ppl_err, 100.0 * (c.result.ppl / b.result.ppl - 1.0), k.mean_kld, k.p99_kld,
                     k.same_top_pct, k.rms_dp_pct);
  }
  return o;
}

}  // namespace edgeq::compare
