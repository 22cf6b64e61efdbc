// Writes a random-weight Hugging Face Llama checkpoint of a given shape for the scale benchmarks: config.json,
// bf16 safetensors in N shards with model.safetensors.index.json, and tl-8m's tokenizer files (vocab 4096).
// Weights are noise (only shapes matter for speed); the same seed gives the same bytes. Not run by ctest.
//   fixture_llama OUT_DIR [--dim 2048] [--layers 16] [--heads 32] [--kv-heads 8] [--head-dim 64]
//                 [--ffn 5632] [--shards 2] [--seed 1] [--tokenizer DIR]
// Default shape: ../shared/golden/scale.json (0.74B parameters, 1.4 GiB).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/formats/mapped_file.h"

namespace fs = std::filesystem;

namespace {

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;  // HF order (rows, cols)
  bool norm = false;           // all ones
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// xorshift64*: fast, deterministic noise; uniform in [-a, a] with the variance of N(0, 0.02^2).
struct Rng {
  uint64_t s;
  uint32_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return static_cast<uint32_t>((s * 0x2545F4914F6CDD1DULL) >> 32);
  }
};

uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

void write_shard(const std::string& path, const std::vector<const Tensor*>& ts, Rng& rng) {
  nlohmann::ordered_json hdr;
  uint64_t off = 0;
  for (const Tensor* t : ts) {
    const uint64_t n = static_cast<uint64_t>(t->numel()) * 2;
    hdr[t->name] = {{"dtype", "BF16"}, {"shape", t->shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string h = hdr.dump();
  while ((h.size() + 8) % 8) h.push_back(' ');
  edgeq::AtomicOutputFile out(path);
  const uint64_t hl = h.size();
  out.write(&hl, 8);
  out.write(h.data(), h.size());
  const float a = 0.02f * std::sqrt(3.f);
  std::vector<uint16_t> buf;
  for (const Tensor* t : ts) {
    buf.resize(static_cast<size_t>(t->numel()));
    for (auto& v : buf) {
      v = t->norm ? to_bf16(1.f) : to_bf16(a * (static_cast<float>(rng.next()) * (2.f / 4294967296.f) - 1.f));
    }
    out.write(buf.data(), buf.size() * 2);
  }
  out.commit();
}

int run(int argc, char** argv) {
  if (argc < 2 || argv[1][0] == '-') {
    std::fprintf(stderr,
                 "usage: fixture_llama OUT_DIR [--dim N] [--layers N] [--heads N] [--kv-heads N] [--head-dim N] "
                 "[--ffn N] [--shards N] [--seed N] [--tokenizer DIR]\n");
    return 2;
  }
  const std::string out = argv[1];
  int64_t dim = 2048, layers = 16, heads = 32, kv = 8, hd = 64, ffn = 5632, shards = 2, seed = 1;
  std::string tok = std::string(EDGEQ_SOURCE_DIR) + "/data/tl-8m";
  for (int i = 2; i < argc; i += 2) {
    if (i + 1 >= argc) throw edgeq::Error(std::string("missing value after ") + argv[i]);
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--tokenizer") {
      tok = v;
      continue;
    }
    const int64_t n = std::stoll(v);
    if (n <= 0) throw edgeq::Error(k + " must be positive");
    if (k == "--dim") dim = n;
    else if (k == "--layers") layers = n;
    else if (k == "--heads") heads = n;
    else if (k == "--kv-heads") kv = n;
    else if (k == "--head-dim") hd = n;
    else if (k == "--ffn") ffn = n;
    else if (k == "--shards") shards = n;
    else if (k == "--seed") seed = n;
    else throw edgeq::Error("unknown option " + k);
  }
  if (heads % kv) throw edgeq::Error("--heads must be a multiple of --kv-heads");
  std::ifstream cfg_in(tok + "/config.json");
  if (!cfg_in) throw edgeq::Error(tok + "/config.json: cannot open (tokenizer source)");
  nlohmann::ordered_json cfg = nlohmann::ordered_json::parse(cfg_in);
  const int64_t vocab = cfg["vocab_size"].get<int64_t>();

  std::vector<Tensor> ts;
  ts.push_back({"model.embed_tokens.weight", {vocab, dim}});
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    ts.push_back({p + "input_layernorm.weight", {dim}, true});
    ts.push_back({p + "self_attn.q_proj.weight", {heads * hd, dim}});
    ts.push_back({p + "self_attn.k_proj.weight", {kv * hd, dim}});
    ts.push_back({p + "self_attn.v_proj.weight", {kv * hd, dim}});
    ts.push_back({p + "self_attn.o_proj.weight", {dim, heads * hd}});
    ts.push_back({p + "post_attention_layernorm.weight", {dim}, true});
    ts.push_back({p + "mlp.gate_proj.weight", {ffn, dim}});
    ts.push_back({p + "mlp.up_proj.weight", {ffn, dim}});
    ts.push_back({p + "mlp.down_proj.weight", {dim, ffn}});
  }
  ts.push_back({"model.norm.weight", {dim}, true});
  ts.push_back({"lm_head.weight", {vocab, dim}});
  int64_t total = 0;
  for (const auto& t : ts) total += t.numel();

  fs::create_directories(out);
  cfg["hidden_size"] = dim;
  cfg["intermediate_size"] = ffn;
  cfg["num_hidden_layers"] = layers;
  cfg["num_attention_heads"] = heads;
  cfg["num_key_value_heads"] = kv;
  cfg["head_dim"] = hd;
  cfg["tie_word_embeddings"] = false;
  cfg["torch_dtype"] = "bfloat16";
  {
    edgeq::AtomicOutputFile f(out + "/config.json");
    const std::string s = cfg.dump(2) + "\n";
    f.write(s.data(), s.size());
    f.commit();
  }
  for (const char* name : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                           "generation_config.json"}) {
    if (fs::exists(tok + "/" + name)) {
      fs::copy_file(tok + "/" + name, out + "/" + name, fs::copy_options::overwrite_existing);
    }
  }
  // Shards split by cumulative size, tensors in order.
  Rng rng{static_cast<uint64_t>(seed) * 0x9E3779B97F4A7C15ULL + 1};
  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", total * 2}};
  size_t i = 0;
  int64_t acc = 0;  // parameters written so far
  for (int64_t s = 0; s < shards; ++s) {
    char fname[64];
    std::snprintf(fname, sizeof fname, "model-%05lld-of-%05lld.safetensors", static_cast<long long>(s + 1),
                  static_cast<long long>(shards));
    std::vector<const Tensor*> part;
    const int64_t target = total * (s + 1) / shards;
    while (i < ts.size() && (s == shards - 1 || acc < target)) {
      part.push_back(&ts[i]);
      acc += ts[i].numel();
      index["weight_map"][ts[i].name] = fname;
      ++i;
    }
    write_shard(out + "/" + fname, part, rng);
  }
  {
    edgeq::AtomicOutputFile f(out + "/model.safetensors.index.json");
    const std::string s = index.dump(2) + "\n";
    f.write(s.data(), s.size());
    f.commit();
  }
  std::printf("%s: %lld parameters, %lld shards\n", out.c_str(), static_cast<long long>(total),
              static_cast<long long>(shards));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fixture_llama: error: %s\n", e.what());
    return 1;
  }
}
