// ONNX weight-role recovery (architecture knowledge, so it lives in convert/): names the weights of a
// torch.onnx export of a Llama-style decoder by their role in the graph, and loads them in HF layout.
#include "edgeq/convert/onnx_roles.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <fmt/ranges.h>

#include "edgeq/base/error.h"

namespace edgeq::convert {

void load_onnx_weight(const OnnxModel& model, const OnnxWeight& w, float* dst) {
  const OnnxTensor* t = model.find(w.onnx_name);
  if (!t) fail("{}: no initializer {} (for {})", model.path(), w.onnx_name, w.hf_name);
  const std::string& file = t->file.empty() ? model.path() : t->file;
  if (!onnx_dtype_is_float(t->onnx_dtype))
    fail("{}: initializer {} ({}): data_type {} cannot be converted to f32", file, t->name, w.hf_name,
         onnx_dtype_name(t->onnx_dtype));
  uint64_t n = 1;
  for (auto d : w.hf_shape) n *= d;
  if (n != t->n_elements())
    fail("{}: initializer {} ({}): {} elements, HF shape needs {}", file, t->name, w.hf_name, t->n_elements(), n);
  const uint32_t es = onnx_dtype_size(t->onnx_dtype);
  if (!w.transposed) {
    model.tensor_to_f32(*t, dst);
  } else {
    if (w.hf_shape.size() != 2 || t->dims.size() != 2 || t->dims[0] != w.hf_shape[1] || t->dims[1] != w.hf_shape[0])
      fail("{}: initializer {} ({}): stored dims [{}] are not the transpose of [{}]", file, t->name, w.hf_name,
           fmt::join(t->dims, ", "), fmt::join(w.hf_shape, ", "));
    // Stored [in, out]; HF wants [out, in]: dst[o * in + i] = src[i * out + o]. Blocked through a tile.
    const uint64_t rows_in = t->dims[0], cols_out = t->dims[1];
    constexpr uint64_t B = 64;
    float tile[B][B];
    for (uint64_t i0 = 0; i0 < rows_in; i0 += B) {
      const uint64_t bi = std::min(B, rows_in - i0);
      for (uint64_t o0 = 0; o0 < cols_out; o0 += B) {
        const uint64_t bo = std::min(B, cols_out - o0);
        for (uint64_t i = 0; i < bi; ++i)
          onnx_to_f32(t->onnx_dtype, t->data + ((i0 + i) * cols_out + o0) * es, tile[i], bo);
        for (uint64_t o = 0; o < bo; ++o) {
          float* d = dst + (o0 + o) * rows_in + i0;
          for (uint64_t i = 0; i < bi; ++i) d[i] = tile[i][o];
        }
      }
    }
  }
  for (uint64_t i = 0; i < n; ++i) {
    if (!std::isfinite(dst[i]))
      fail("{}: initializer {} ({}): non-finite value {} at element {}", file, t->name, w.hf_name, dst[i], i);
  }
}

// ---------------------------------------------------------------------------------------------
// Role recovery

namespace {

struct WeightRef {
  const OnnxTensor* t = nullptr;
  bool flipped = false;  // a Transpose node sits between the initializer and its use
};

struct WeightMM {
  int node = -1;
  const OnnxTensor* t = nullptr;
  bool transposed = false;  // stored [in, out]
  uint64_t in = 0, out = 0;
};

enum class Role { None, Q, K, V, O, Gate, Up, Down, LmHead };

class Graph {
 public:
  explicit Graph(const OnnxModel& m) : m_(m) {
    const size_t n = m.nodes().size();
    // Budget for all searches together: plenty for real graphs, bounded for hostile ones.
    budget_ = 64 * static_cast<uint64_t>(n) + 100000;
    producer_.reserve(n);
    for (size_t i = 0; i < n; ++i)
      for (const auto& o : m.nodes()[i].out)
        if (!o.empty()) producer_[o] = static_cast<int>(i);
    for (size_t i = 0; i < n; ++i) {
      const auto& in = m.nodes()[i].in;
      for (size_t s = 0; s < in.size(); ++s)
        if (!in[s].empty()) consumers_[in[s]].push_back({static_cast<int>(i), static_cast<int>(s)});
    }
    // Topological order (Kahn); a cycle is an error.
    std::vector<int> indeg(n, 0);
    for (size_t i = 0; i < n; ++i)
      for (const auto& v : m.nodes()[i].in)
        if (!v.empty() && producer_.count(v)) ++indeg[i];
    std::vector<int> queue;
    for (size_t i = 0; i < n; ++i)
      if (indeg[i] == 0) queue.push_back(static_cast<int>(i));
    topo_.assign(n, -1);
    int pos = 0;
    for (size_t qi = 0; qi < queue.size(); ++qi) {
      int u = queue[qi];
      topo_[u] = pos++;
      for (const auto& o : m.nodes()[u].out) {
        auto it = consumers_.find(o);
        if (o.empty() || it == consumers_.end()) continue;
        for (auto [c, s] : it->second)
          if (--indeg[c] == 0) queue.push_back(c);
      }
    }
    if (static_cast<size_t>(pos) != n) fail("{}: the graph has a cycle", m.path());
    // Weight matmuls.
    for (size_t i = 0; i < n; ++i) {
      const OnnxNode& nd = m.nodes()[i];
      if (!nd.domain.empty() && nd.domain != "ai.onnx") continue;
      const bool mm = nd.op == "MatMul" && nd.in.size() == 2;
      const bool gemm = nd.op == "Gemm" && nd.in.size() >= 2 && nd.trans_a == 0;
      if (!mm && !gemm) continue;
      WeightRef a = resolve(nd.in[0]);
      WeightRef w = resolve(nd.in[1]);
      if (a.t) continue;  // a constant on the left: not a linear layer on activations
      if (!w.t) {
        if (mm) act_mm_.insert(static_cast<int>(i));
        continue;
      }
      if (w.t->dims.size() != 2 || !onnx_dtype_is_float(w.t->onnx_dtype)) continue;
      WeightMM wm;
      wm.node = static_cast<int>(i);
      wm.t = w.t;
      // MatMul: y = x W with W [in, out]: stored transposed relative to HF's [out, in]; Gemm transB=1 is not.
      wm.transposed = (gemm && nd.trans_b) ? w.flipped : !w.flipped;
      wm.in = wm.transposed ? w.t->dims[0] : w.t->dims[1];
      wm.out = wm.transposed ? w.t->dims[1] : w.t->dims[0];
      wmm_index_[static_cast<int>(i)] = weight_mms_.size();
      weight_mms_.push_back(wm);
    }
  }

    const OnnxNode& node(int i) const { return m_.nodes()[static_cast<size_t>(i)]; }
  int topo(int i) const { return topo_[static_cast<size_t>(i)]; }
  const std::vector<WeightMM>& weight_mms() const { return weight_mms_; }
  const WeightMM* weight_mm(int node) const {
    auto it = wmm_index_.find(node);
    return it == wmm_index_.end() ? nullptr : &weight_mms_[it->second];
  }
  bool is_act_mm(int node) const { return act_mm_.count(node) > 0; }

  const OnnxTensor* init(const std::string& v) const {
    return m_.find(v);
  }
  int producer(const std::string& v) const {
    auto it = producer_.find(v);
    return it == producer_.end() ? -1 : it->second;
  }
  const std::vector<std::pair<int, int>>& consumers(const std::string& v) const {
    static const std::vector<std::pair<int, int>> none;
    auto it = consumers_.find(v);
    return it == consumers_.end() ? none : it->second;
  }

  // Follows Cast/Identity/2-D Transpose back to an initializer.
  WeightRef resolve(const std::string& v) const {
    WeightRef r;
    std::string cur = v;
    for (int step = 0; step < 8; ++step) {
      if (const OnnxTensor* t = init(cur)) {
        r.t = t;
        return r;
      }
      int p = producer(cur);
      if (p < 0) return {};
      const OnnxNode& nd = node(p);
      if (nd.in.empty()) return {};
      if (nd.op == "Cast" || nd.op == "Identity") {
        cur = nd.in[0];
      } else if (nd.op == "Transpose" && (!nd.has_perm || nd.perm == std::vector<int64_t>{1, 0})) {
        r.flipped = !r.flipped;
        cur = nd.in[0];
      } else {
        return {};
      }
    }
    return {};
  }

  void spend() {
    if (budget_ == 0) fail("{}: graph too large or too irregular for role recovery", m_.path());
    --budget_;
  }

  struct Reach {
    std::vector<std::pair<int, int>> weight;  // (node, slot) of weight matmuls reached
    std::vector<std::pair<int, int>> act;     // (node, slot) of activation matmuls reached
    std::set<std::string> ops;                // op types passed through
    std::vector<int> adds;                    // Add nodes passed through
  };

  // Forward data-flow search from value v. pass_only: follow shape-only ops (Cast, Reshape, ...) only.
  // Stops at matmuls. Shape/Size consumers carry no values and are not followed.
  Reach forward(const std::string& v, bool pass_only) {
    static const std::set<std::string> pass = {"Cast", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten"};
    Reach r;
    std::set<int> seen;
    std::set<std::pair<int, int>> hit;
    std::vector<std::string> todo{v};
    while (!todo.empty()) {
      std::string cur = std::move(todo.back());
      todo.pop_back();
      for (auto [c, s] : consumers(cur)) {
        spend();
        const OnnxNode& nd = node(c);
        if (weight_mm(c) || is_act_mm(c)) {
          if (!hit.insert({c, s}).second) continue;
          if (weight_mm(c)) {
            if (s == 0) r.weight.push_back({c, s});
          } else {
            r.act.push_back({c, s});
          }
          continue;
        }
        if (nd.op == "Shape" || nd.op == "Size") continue;
        if (nd.op == "Add") r.adds.push_back(c);
        if (pass_only && (!pass.count(nd.op) || s != 0)) continue;
        if (!seen.insert(c).second) continue;
        r.ops.insert(nd.op);
        for (const auto& o : nd.out)
          if (!o.empty()) todo.push_back(o);
      }
    }
    return r;
  }

  // Whether node `to` is downstream of node `from` (data flow, ignoring Shape/Size).
  bool reaches(int from, int to) {
    const int limit = topo(to);
    std::set<int> seen{from};
    std::vector<int> todo{from};
    while (!todo.empty()) {
      int u = todo.back();
      todo.pop_back();
      for (const auto& o : node(u).out) {
        if (o.empty()) continue;
        for (auto [c, s] : consumers(o)) {
          spend();
          if (c == to) return true;
          if (topo(c) > limit || node(c).op == "Shape" || node(c).op == "Size") continue;
          if (seen.insert(c).second) todo.push_back(c);
        }
      }
    }
    return false;
  }

 private:
  const OnnxModel& m_;
  uint64_t budget_ = 0;
  std::unordered_map<std::string, int> producer_;
  std::unordered_map<std::string, std::vector<std::pair<int, int>>> consumers_;
  std::vector<int> topo_;
  std::vector<WeightMM> weight_mms_;
  std::unordered_map<int, size_t> wmm_index_;
  std::set<int> act_mm_;
};

struct NormInfo {
  int node = -1;
  const OnnxTensor* t = nullptr;
  std::vector<int> feeds;  // weight matmul nodes fed (through shape-only ops)
};

const char* role_proj(Role r) {
  switch (r) {
    case Role::Q: return "self_attn.q_proj";
    case Role::K: return "self_attn.k_proj";
    case Role::V: return "self_attn.v_proj";
    case Role::O: return "self_attn.o_proj";
    case Role::Gate: return "mlp.gate_proj";
    case Role::Up: return "mlp.up_proj";
    case Role::Down: return "mlp.down_proj";
    default: return "lm_head";
  }
}

// Names that look like HF checkpoint names (an exporter that kept the module's parameter name).
bool looks_like_hf_name(std::string_view n) {
  const bool suffix = n.ends_with(".weight") || n.ends_with(".bias");
  return suffix && (n.starts_with("model.embed_tokens.") || n.starts_with("model.norm.") ||
                    n.starts_with("model.layers.") || n.starts_with("lm_head."));
}

// "layers.N/self_attn/q_proj/" (torch module path) anywhere in a node name -> "model.layers.N.self_attn.q_proj".
// Hand-written rather than std::regex: node names are untrusted and may be huge.
std::optional<std::string> hf_from_node_name(std::string_view n) {
  static const char* const projs[] = {"self_attn/q_proj/", "self_attn/k_proj/", "self_attn/v_proj/",
                                      "self_attn/o_proj/", "mlp/gate_proj/",    "mlp/up_proj/",
                                      "mlp/down_proj/"};
  for (size_t pos = n.find("layers."); pos != std::string_view::npos; pos = n.find("layers.", pos + 1)) {
    size_t p = pos + 7;
    uint64_t layer = 0;
    size_t digits = 0;
    while (p < n.size() && n[p] >= '0' && n[p] <= '9' && digits < 9) {
      layer = layer * 10 + static_cast<uint64_t>(n[p++] - '0');
      ++digits;
    }
    if (digits == 0 || p >= n.size() || n[p] != '/') continue;
    std::string_view rest = n.substr(p + 1);
    for (const char* pr : projs) {
      std::string_view sv(pr);
      if (rest.starts_with(sv)) {
        std::string dotted(sv.substr(0, sv.size() - 1));
        std::replace(dotted.begin(), dotted.end(), '/', '.');
        return fmt::format("model.layers.{}.{}", layer, dotted);
      }
    }
  }
  return std::nullopt;
}

std::string role_name(Role r, int layer) {
  if (r == Role::LmHead) return "lm_head";
  return fmt::format("model.layers.{}.{}", layer, role_proj(r));
}

}  // namespace

std::vector<OnnxWeight> recover_hf_weights(const OnnxModel& model, const OnnxLlamaShape& cfg_in) {
  const OnnxModel& m = model;
  const std::string& path = m.path();
  OnnxLlamaShape cfg = cfg_in;
  if (cfg.n_kv_heads == 0) cfg.n_kv_heads = cfg.n_heads;
  if (cfg.head_dim == 0 && cfg.n_heads) cfg.head_dim = cfg.hidden_size / cfg.n_heads;
  const uint64_t kLim = uint64_t{1} << 31;
  for (uint64_t v : {cfg.hidden_size, cfg.intermediate_size, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads,
                     cfg.head_dim, cfg.vocab_size})
    if (v == 0 || v > kLim)
      fail("{}: role recovery needs positive hidden/intermediate/layers/heads/kv heads/head_dim/vocab sizes "
           "(got {}/{}/{}/{}/{}/{}/{})", path, cfg.hidden_size, cfg.intermediate_size, cfg.n_layers, cfg.n_heads,
           cfg.n_kv_heads, cfg.head_dim, cfg.vocab_size);
  if (cfg.n_layers > 100000) fail("{}: {} layers is not plausible", path, cfg.n_layers);
  const uint64_t q_out = cfg.n_heads * cfg.head_dim, kv_out = cfg.n_kv_heads * cfg.head_dim;

  Graph g(m);

  // Embedding: Gather from a [vocab, hidden] float initializer.
  const OnnxTensor* embed = nullptr;
  for (size_t i = 0; i < m.nodes().size(); ++i) {
    const OnnxNode& nd = m.nodes()[i];
    if (nd.op != "Gather" || nd.in.size() != 2) continue;
    WeightRef w = g.resolve(nd.in[0]);
    if (!w.t || w.flipped || w.t->dims.size() != 2 || !onnx_dtype_is_float(w.t->onnx_dtype)) continue;
    if (w.t->dims[0] != cfg.vocab_size || w.t->dims[1] != cfg.hidden_size) continue;
    if (embed && embed != w.t)
      fail("{}: ambiguous token embedding: both {} and {} are gathered as [{}, {}] tables", path, embed->name,
           w.t->name, cfg.vocab_size, cfg.hidden_size);
    embed = w.t;
  }
  if (!embed)
    fail("{}: no token embedding found (a Gather from a [{}, {}] float initializer)", path, cfg.vocab_size,
         cfg.hidden_size);

  // Norm candidates: Mul by a [hidden] float initializer (RMSNorm's weight), or a *Normalization op's scale,
  // whose output feeds weight matmuls through shape-only ops.
  std::vector<NormInfo> norms;
  for (size_t i = 0; i < m.nodes().size(); ++i) {
    const OnnxNode& nd = m.nodes()[i];
    const OnnxTensor* w = nullptr;
    auto is_norm_w = [&](const std::string& v) -> const OnnxTensor* {
      WeightRef r = g.resolve(v);
      if (r.t && r.t->dims.size() == 1 && r.t->dims[0] == cfg.hidden_size && onnx_dtype_is_float(r.t->onnx_dtype))
        return r.t;
      return nullptr;
    };
    if (nd.op == "Mul" && nd.in.size() == 2) {
      const OnnxTensor* a = is_norm_w(nd.in[0]);
      const OnnxTensor* b = is_norm_w(nd.in[1]);
      if (a && b) continue;
      w = a ? a : b;
      if (w && g.resolve(a ? nd.in[1] : nd.in[0]).t) continue;
    } else if ((nd.op == "SimplifiedLayerNormalization" || nd.op == "RMSNormalization" ||
                nd.op == "SkipSimplifiedLayerNormalization") &&
               nd.in.size() >= 2) {
      const bool skip = nd.op == "SkipSimplifiedLayerNormalization";
      if (skip && nd.in.size() < 3) continue;
      w = is_norm_w(skip ? nd.in[2] : nd.in[1]);
    }
    if (!w || nd.out.empty() || nd.out[0].empty()) continue;
    NormInfo ni;
    ni.node = static_cast<int>(i);
    ni.t = w;
    auto r = g.forward(nd.out[0], true);
    for (auto [c, s] : r.weight) ni.feeds.push_back(c);
    if (ni.feeds.empty()) continue;
    norms.push_back(std::move(ni));
  }
  std::sort(norms.begin(), norms.end(), [&](const NormInfo& a, const NormInfo& b) { return g.topo(a.node) < g.topo(b.node); });

  const size_t L = static_cast<size_t>(cfg.n_layers);
  if (norms.size() != 2 * L + 1)
    fail("{}: expected {} RMSNorm weights feeding projections ({} layers x 2 + final), found {}", path, 2 * L + 1, L,
         norms.size());
  // The norms must form one chain along the residual stream.
  for (size_t i = 0; i + 1 < norms.size(); ++i)
    if (!g.reaches(norms[i].node, norms[i + 1].node))
      fail("{}: norm {} (node {}) does not lead to norm {} (node {}) along the residual stream", path,
           norms[i].t->name, g.node(norms[i].node).name, norms[i + 1].t->name, g.node(norms[i + 1].node).name);

  std::vector<OnnxWeight> out;
  std::map<const OnnxTensor*, std::string> used;  // initializer -> HF name
  auto add = [&](const std::string& hf, const OnnxTensor* t, bool transposed, std::vector<uint64_t> expect) {
    std::vector<uint64_t> hf_shape = t->dims;
    if (transposed) std::reverse(hf_shape.begin(), hf_shape.end());
    if (hf_shape != expect)
      fail("{}: {} (initializer {}): HF shape [{}], the config implies [{}]", path, hf, t->name,
           fmt::join(hf_shape, ", "), fmt::join(expect, ", "));
    auto [it, fresh] = used.emplace(t, hf);
    if (!fresh && !(hf == "lm_head.weight" && it->second == "model.embed_tokens.weight"))
      fail("{}: initializer {} is used both as {} and as {}", path, t->name, it->second, hf);
    // An initializer already carrying an HF-style name must carry this one.
    if (fresh && t->name != hf && looks_like_hf_name(t->name))
      fail("{}: initializer {} is named like an HF weight, but the graph structure makes it {}", path, t->name, hf);
    OnnxWeight w;
    w.hf_name = hf;
    w.onnx_name = t->name;
    w.hf_shape = std::move(hf_shape);
    w.transposed = transposed;
    w.onnx_dtype = t->onnx_dtype;
    out.push_back(std::move(w));
  };
  // OnnxNode names exported from module paths ("/model/layers.3/self_attn/q_proj/MatMul") must agree.
  std::set<int> assigned;
  auto add_proj = [&](int node, Role role, int layer, std::vector<uint64_t> expect) {
    const WeightMM* wm = g.weight_mm(node);
    const std::string base = role_name(role, layer);
    const std::string& nn = g.node(node).name;
    if (auto named_opt = hf_from_node_name(nn)) {
      const std::string& named = *named_opt;
      if (named != base)
        fail("{}: node {} is named as {}, but the graph structure makes its weight {}", path, nn, named, base);
    } else if (nn.find("lm_head") != std::string::npos && role != Role::LmHead) {
      fail("{}: node {} is named as lm_head, but the graph structure makes its weight {}", path, nn, base);
    }
    if (!assigned.insert(node).second) fail("{}: matmul {} gets two roles", path, nn);
    add(base + ".weight", wm->t, wm->transposed, std::move(expect));
    // Optional bias: the projection's only consumer is an Add with a [out] initializer (or Gemm's C input).
    const OnnxNode& nd = g.node(node);
    const OnnxTensor* bias = nullptr;
    if (nd.op == "Gemm" && nd.in.size() >= 3 && !nd.in[2].empty()) {
      bias = g.resolve(nd.in[2]).t;
    } else if (!nd.out.empty() && g.consumers(nd.out[0]).size() == 1) {
      const OnnxNode& c = g.node(g.consumers(nd.out[0])[0].first);
      if (c.op == "Add" && c.in.size() == 2) bias = g.resolve(c.in[0] == nd.out[0] ? c.in[1] : c.in[0]).t;
    }
    if (bias) add(base + ".bias", bias, false, {wm->out});
  };
  auto describe = [&](int node) {
    const WeightMM* wm = g.weight_mm(node);
    return fmt::format("{} (initializer {})", g.node(node).name, wm ? wm->t->name : "?");
  };
  // Output of a projection after an optional bias Add.
  auto proj_out = [&](int node) { return g.node(node).out.empty() ? std::string() : g.node(node).out[0]; };

  add("model.embed_tokens.weight", embed, false, {cfg.vocab_size, cfg.hidden_size});
  for (size_t l = 0; l < L; ++l) {
    const int li = static_cast<int>(l);
    const NormInfo& an = norms[2 * l];
    const NormInfo& fn = norms[2 * l + 1];
    // --- attention
    if (an.feeds.size() != 3)
      fail("{}: layer {}: input_layernorm {} feeds {} projections, expected 3 (q, k, v){}", path, l, an.t->name,
           an.feeds.size(), an.feeds.size() == 1 ? " (fused QKV is not supported)" : "");
    add(fmt::format("model.layers.{}.input_layernorm.weight", l), an.t, false, {cfg.hidden_size});
    struct P {
      int node;
      Graph::Reach r;
    };
    std::vector<P> ps;
    for (int n : an.feeds) ps.push_back({n, g.forward(proj_out(n), false)});
    // q and k meet in the score matmul Q·Kᵀ (q on the left, k on the right); v enters the context matmul on the right.
    int q = -1, k = -1, v = -1, scores = -1;
    for (size_t a = 0; a < 3 && scores < 0; ++a)
      for (size_t b = 0; b < 3 && scores < 0; ++b) {
        if (a == b) continue;
        for (auto [ca, sa] : ps[a].r.act)
          for (auto [cb, sb] : ps[b].r.act)
            if (ca == cb && sa == 0 && sb == 1 && scores < 0) {
              scores = ca;
              q = static_cast<int>(a);
              k = static_cast<int>(b);
            }
      }
    if (scores < 0)
      fail("{}: layer {}: no attention score matmul (Q·Kᵀ) fed by two of the projections {}, {}, {}", path, l,
           describe(ps[0].node), describe(ps[1].node), describe(ps[2].node));
    v = 3 - q - k;
    int context = -1;
    for (auto [c, s] : ps[v].r.act)
      if (s == 1 && c != scores) {
        if (context >= 0 && context != c) fail("{}: layer {}: v projection {} feeds two attention matmuls", path, l, describe(ps[v].node));
        context = c;
      }
    if (context < 0)
      fail("{}: layer {}: v projection {} does not reach the attention context matmul (softmax·V)", path, l,
           describe(ps[v].node));
    {
      auto sr = g.forward(g.node(scores).out.empty() ? std::string() : g.node(scores).out[0], false);
      bool ok = sr.ops.count("Softmax") > 0;
      bool reach = false;
      for (auto [c, s] : sr.act) reach |= (c == context && s == 0);
      if (!ok || !reach)
        fail("{}: layer {}: the score matmul {} does not feed the context matmul {} through a Softmax", path, l,
             g.node(scores).name, g.node(context).name);
    }
    auto cr = g.forward(g.node(context).out.empty() ? std::string() : g.node(context).out[0], false);
    if (cr.weight.size() != 1)
      fail("{}: layer {}: attention output feeds {} projections, expected exactly one (o_proj)", path, l,
           cr.weight.size());
    const int o = cr.weight[0].first;
    {
      auto orr = g.forward(proj_out(o), true);
      if (orr.adds.empty()) fail("{}: layer {}: o_proj {} does not feed a residual Add", path, l, describe(o));
    }
    add_proj(ps[q].node, Role::Q, li, {q_out, cfg.hidden_size});
    add_proj(ps[k].node, Role::K, li, {kv_out, cfg.hidden_size});
    add_proj(ps[v].node, Role::V, li, {kv_out, cfg.hidden_size});
    add_proj(o, Role::O, li, {cfg.hidden_size, q_out});
    // --- MLP
    if (fn.feeds.size() != 2)
      fail("{}: layer {}: post_attention_layernorm {} feeds {} projections, expected 2 (gate, up){}", path, l,
           fn.t->name, fn.feeds.size(), fn.feeds.size() == 1 ? " (fused gate_up is not supported)" : "");
    add(fmt::format("model.layers.{}.post_attention_layernorm.weight", l), fn.t, false, {cfg.hidden_size});
    static const std::set<std::string> nonlin = {"Sigmoid", "Tanh", "Erf", "Relu", "Gelu", "FastGelu", "HardSigmoid",
                                                 "HardSwish", "Softplus", "Elu", "Selu", "QuickGelu"};
    int gate = -1, up = -1, down = -1;
    for (int j = 0; j < 2; ++j) {
      auto r = g.forward(proj_out(fn.feeds[static_cast<size_t>(j)]), false);
      bool act = false;
      for (const auto& op : r.ops) act |= nonlin.count(op) > 0;
      if (r.weight.size() != 1)
        fail("{}: layer {}: MLP projection {} feeds {} projections, expected exactly one (down_proj)", path, l,
             describe(fn.feeds[static_cast<size_t>(j)]), r.weight.size());
      if (down >= 0 && down != r.weight[0].first)
        fail("{}: layer {}: gate and up projections feed different down projections", path, l);
      down = r.weight[0].first;
      int& slot = act ? gate : up;
      if (slot >= 0)
        fail("{}: layer {}: cannot tell gate from up: {} an activation function", path, l,
             act ? "both pass through" : "neither passes through");
      slot = fn.feeds[static_cast<size_t>(j)];
    }
    add_proj(gate, Role::Gate, li, {cfg.intermediate_size, cfg.hidden_size});
    add_proj(up, Role::Up, li, {cfg.intermediate_size, cfg.hidden_size});
    add_proj(down, Role::Down, li, {cfg.hidden_size, cfg.intermediate_size});
  }
  const NormInfo& fin = norms[2 * L];
  if (fin.feeds.size() != 1)
    fail("{}: final norm {} feeds {} projections, expected 1 (lm_head)", path, fin.t->name, fin.feeds.size());
  add("model.norm.weight", fin.t, false, {cfg.hidden_size});
  {
    const int head = fin.feeds[0];
    const WeightMM* wm = g.weight_mm(head);
    if (wm->t == embed) {
      assigned.insert(head);  // tied: the output projection reuses the embedding
      if (!cfg.tie_word_embeddings)
        add("lm_head.weight", embed, false, {cfg.vocab_size, cfg.hidden_size});
    } else if (cfg.tie_word_embeddings) {
      assigned.insert(head);  // a folded copy of the tied embedding: the HF checkpoint has no lm_head
      if (wm->out != cfg.vocab_size || wm->in != cfg.hidden_size)
        fail("{}: lm_head {}: shape does not match [{}, {}]", path, describe(head), cfg.vocab_size, cfg.hidden_size);
    } else {
      add_proj(head, Role::LmHead, 0, {cfg.vocab_size, cfg.hidden_size});
    }
  }
  for (const auto& wm : g.weight_mms())
    if (!assigned.count(wm.node)) fail("{}: weight matmul {} has no recognised role", path, describe(wm.node));
  return out;
}

}  // namespace edgeq::convert
