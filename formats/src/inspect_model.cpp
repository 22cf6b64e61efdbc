#include "edgeq/formats/inspect_model.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include "edgeq/base/human_bytes.h"
#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/formats/model_path.h"
#include "edgeq/formats/onnx.h"
#include "edgeq/formats/palette_layout.h"
#include "edgeq/formats/safetensors.h"

namespace edgeq {

namespace {

nlohmann::json value_to_json(const GgufValue& v, size_t max_items) {
  return std::visit(
      [&](const auto& x) -> nlohmann::json {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, GgufArray>) {
          nlohmann::json a = nlohmann::json::array();
          for (size_t i = 0; i < x.items.size() && i < max_items; ++i) a.push_back(value_to_json(x.items[i], max_items));
          return {{"array_of", gguf_type_name(x.elem_type)}, {"length", x.items.size()}, {"head", a}};
        } else if constexpr (std::is_same_v<T, float>) {
          // the float's shortest decimal form (1e-05, not 9.999999747378752e-06)
          return std::isfinite(x) ? nlohmann::json(std::stod(fmt::format("{}", x))) : nlohmann::json(fmt::format("{}", x));
        } else if constexpr (std::is_same_v<T, double>) {
          return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(fmt::format("{}", x));
        } else {
          return nlohmann::json(x);
        }
      },
      v.v);
}

void finish_totals(nlohmann::json& r, const std::map<std::string, std::pair<uint64_t, uint64_t>>& hist, uint64_t params,
                   uint64_t bytes) {
  r["parameters"] = params;
  r["tensor_bytes"] = bytes;
  r["bits_per_weight"] = params ? 8.0 * static_cast<double>(bytes) / static_cast<double>(params) : 0.0;
  nlohmann::json h = nlohmann::json::object();
  for (auto& [t, cb] : hist) h[t] = {{"tensors", cb.first}, {"bytes", cb.second}};
  r["type_histogram"] = h;
}

// The summary of config.json and the tokenizer files in a checkpoint directory (HF or an optimum-style ONNX export).
void add_checkpoint_files(nlohmann::json& r, const std::filesystem::path& dir) {
  auto cfg_path = (dir / "config.json").string();
  if (std::filesystem::exists(cfg_path)) {
    MappedFile m(cfg_path);
    nlohmann::json cfg;
    try {
      cfg = nlohmann::json::parse(m.data(), m.data() + m.size());
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not valid JSON: {}", cfg_path, e.what());
    }
    if (!cfg.is_object()) fail("{}: not a JSON object", cfg_path);
    nlohmann::json s;
    if (cfg.contains("architectures") && cfg["architectures"].is_array() && !cfg["architectures"].empty())
      s["architecture"] = cfg["architectures"][0];
    for (const char* k : {"model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                          "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings", "rms_norm_eps",
                          "rope_theta", "tie_word_embeddings", "torch_dtype"})
      if (cfg.contains(k)) s[k] = cfg[k];
    r["config"] = s;
  }
  nlohmann::json tok = nlohmann::json::array();
  for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"})
    if (std::filesystem::exists(dir / f)) tok.push_back(f);
  r["tokenizer_files"] = tok;
}

nlohmann::json inspect_gguf(const std::string& path) {
  auto f = GgufFile::open(path);
  nlohmann::json r;
  r["path"] = path;
  r["format"] = "gguf";
  r["version"] = f.version();
  r["alignment"] = f.alignment();
  r["file_size"] = f.file_size();
  r["data_offset"] = f.data_offset();
  if (f.splits().size() > 1) {  // a split set (formats/gguf.h): its files, each with its own tensors
    nlohmann::json sp = nlohmann::json::array();
    for (const auto& s : f.splits())
      sp.push_back({{"path", s.path}, {"file_size", s.file_size}, {"data_offset", s.data_offset}, {"tensors", s.n_tensors}});
    r["splits"] = sp;
  }
  nlohmann::json md = nlohmann::json::array();
  for (auto& [k, v] : f.metadata()) md.push_back({{"key", k}, {"type", gguf_type_name(v.type())}, {"value", value_to_json(v, 8)}});
  r["metadata"] = md;
  nlohmann::json ts = nlohmann::json::array();
  std::map<std::string, std::pair<uint64_t, uint64_t>> hist;
  // A palettized weight's parameters and bits per weight (index and table bytes) are shown on its index tensor;
  // its table holds no parameters (formats/palette_layout.h).
  const auto pal = palette::palettized_tensors(f);
  std::map<std::string_view, const palette::PalTensor*> parts;
  for (const auto& p : pal) {
    parts.emplace(p.index->name, &p);
    parts.emplace(p.lut->name, nullptr);
  }
  for (auto& t : f.tensors()) {
    uint64_t n = t.n_elements(), nb = t.nbytes;
    if (auto it = parts.find(t.name); it != parts.end()) {
      n = it->second ? it->second->n_elements() : 0;
      nb = it->second ? it->second->nbytes() : 0;
    }
    const char* tn = ggml_type_name(t.type);
    ts.push_back({{"name", t.name}, {"type", tn}, {"shape", t.dims}, {"elements", n}, {"bytes", t.nbytes},
                  {"offset", f.splits()[t.split].data_offset + t.offset},
                  {"bits_per_weight", n ? 8.0 * static_cast<double>(nb) / static_cast<double>(n) : 0.0}});
    if (f.splits().size() > 1) ts.back()["split"] = t.split;
    hist[tn].first++;
    hist[tn].second += t.nbytes;
  }
  r["tensor_count"] = f.tensors().size();
  r["tensors"] = ts;
  if (!pal.empty())
    r["palettized"] = {{"tensors", pal.size()}, {"bits", pal.front().bits},
                       {"group", f.get_int(palette::kGroupKey).value_or(0)}};
  const palette::DataSize size = palette::data_size(f);
  finish_totals(r, hist, size.parameters, size.bytes);
  return r;
}

nlohmann::json inspect_checkpoint(const std::string& path, bool is_dir) {
  auto c = SafetensorsCheckpoint::open(path);
  nlohmann::json r;
  r["path"] = path;
  r["format"] = is_dir ? "hf-checkpoint" : "safetensors";
  r["files"] = nlohmann::json::array();
  uint64_t fsize = 0;
  for (auto& f : c.files()) {
    auto sz = std::filesystem::file_size(f.path());
    fsize += sz;
    r["files"].push_back({{"path", f.path()}, {"bytes", sz}, {"tensors", f.tensors().size()}});
  }
  r["file_size"] = fsize;
  nlohmann::json md = nlohmann::json::object();
  for (auto& [k, v] : c.metadata()) md[k] = v;
  r["metadata"] = md;
  nlohmann::json ts = nlohmann::json::array();
  std::map<std::string, std::pair<uint64_t, uint64_t>> hist;
  uint64_t params = 0, bytes = 0;
  for (auto* t : c.tensors()) {
    uint64_t n = t->n_elements();
    const char* dn = st_dtype_name(t->dtype);
    ts.push_back({{"name", t->name}, {"type", dn}, {"shape", t->shape}, {"elements", n}, {"bytes", t->nbytes},
                  {"file", std::filesystem::path(t->file).filename().string()},
                  {"bits_per_weight", 8.0 * st_dtype_size(t->dtype)}});
    params += n;
    bytes += t->nbytes;
    hist[dn].first++;
    hist[dn].second += t->nbytes;
  }
  r["tensor_count"] = c.tensors().size();
  r["tensors"] = ts;
  finish_totals(r, hist, params, bytes);
  if (is_dir) add_checkpoint_files(r, path);
  return r;
}

// An ONNX model: its graph summary and initializers (the weights convert reads), with the external data files.
// `dir_given`: the path was a checkpoint directory holding model.onnx, so its config and tokenizer are described.
nlohmann::json inspect_onnx(const std::string& path, const std::string& model_path, bool dir_given) {
  namespace fs = std::filesystem;
  const auto m = OnnxModel::open(model_path);
  nlohmann::json r;
  r["path"] = path;
  r["format"] = "onnx";
  r["model_file"] = model_path;
  r["ir_version"] = m.ir_version();
  r["opset_version"] = m.opset_version();
  r["producer"] = m.producer_name();
  r["nodes"] = m.n_nodes();
  std::map<std::string, std::pair<uint64_t, uint64_t>> files;  // file -> (initializers, bytes on disk)
  auto size_of = [](const std::string& f) {
    std::error_code ec;
    const auto n = fs::file_size(f, ec);
    if (ec) fail("{}: cannot read its size: {}", f, ec.message());
    return static_cast<uint64_t>(n);
  };
  files[model_path] = {0, size_of(model_path)};
  nlohmann::json ts = nlohmann::json::array();
  std::map<std::string, std::pair<uint64_t, uint64_t>> hist;
  uint64_t params = 0, bytes = 0;
  for (const auto& t : m.initializers()) {
    const uint64_t n = t.n_elements();
    const char* dn = onnx_dtype_name(t.onnx_dtype);
    const char* storage = t.storage == OnnxStorage::External ? "external"
                          : t.storage == OnnxStorage::Raw    ? "raw"
                          : t.storage == OnnxStorage::Typed  ? "typed"
                                                             : "none";
    const std::string file = t.file.empty() ? model_path : t.file;
    if (!files.count(file)) files[file] = {0, size_of(file)};
    files[file].first++;
    ts.push_back({{"name", t.name}, {"type", dn}, {"shape", t.dims}, {"elements", n}, {"bytes", t.nbytes},
                  {"storage", storage}, {"file", fs::path(file).filename().string()}, {"offset", t.offset},
                  {"bits_per_weight", 8.0 * onnx_dtype_size(t.onnx_dtype)}});
    params += n;
    bytes += t.nbytes;
    hist[dn].first++;
    hist[dn].second += t.nbytes;
  }
  uint64_t fsize = 0;
  r["files"] = nlohmann::json::array();
  for (const auto& [f, cb] : files) {
    fsize += cb.second;
    r["files"].push_back({{"path", f}, {"bytes", cb.second}, {"tensors", cb.first}});
  }
  r["file_size"] = fsize;
  r["metadata"] = nlohmann::json::object();
  r["tensor_count"] = m.initializers().size();
  r["tensors"] = ts;
  finish_totals(r, hist, params, bytes);
  if (dir_given) add_checkpoint_files(r, path);
  return r;
}

std::string shape_str(const nlohmann::json& s) {
  std::string o;
  for (size_t i = 0; i < s.size(); ++i) o += (i ? " x " : "") + std::to_string(s[i].get<uint64_t>());
  return o;
}

std::string json_scalar(const nlohmann::json& v) {
  if (v.is_string()) {
    std::string s = v.get<std::string>();
    if (s.size() > 70) s = s.substr(0, 67) + "...";
    std::string o = "\"";
    for (char c : s) {
      if (c == '\n') o.append("\\n");
      else o.push_back(c);
    }
    o.push_back('"');
    return o;
  }
  return v.dump();
}

}  // namespace

nlohmann::json inspect_path(const std::string& path) {
  const ModelPath m = classify_model_path(path);
  switch (m.kind) {
    case ModelKind::Gguf: return inspect_gguf(path);  // a bad magic is reported by the reader
    case ModelKind::HfCheckpoint: return inspect_checkpoint(path, true);
    case ModelKind::Safetensors: return inspect_checkpoint(path, false);
    case ModelKind::Onnx: return inspect_onnx(path, m.onnx_path, m.onnx_path != path);
  }
  fail("{}: unrecognised model kind", path);
}

std::string render_inspection(const nlohmann::json& r, size_t max_tensors) {
  std::string o;
  std::string fmt_name = r["format"];
  if (fmt_name == "gguf") {
    o += fmt::format("{}: GGUF v{}, alignment {}, {} ({} bytes)\n", r["path"].get<std::string>(), r["version"].get<int>(),
                     r["alignment"].get<int>(), human_bytes(r["file_size"]), r["file_size"].get<uint64_t>());
    if (r.contains("splits")) {
      o += fmt::format("split GGUF, {} files:\n", r["splits"].size());
      for (auto& s : r["splits"])
        o += fmt::format("  {}: {} tensors, {} ({} bytes)\n", s["path"].get<std::string>(), s["tensors"].get<uint64_t>(),
                         human_bytes(s["file_size"]), s["file_size"].get<uint64_t>());
    }
  }
  else if (fmt_name == "onnx")
    o += fmt::format("{}: ONNX, IR version {}, opset {}, producer \"{}\", {} nodes ({} file{}, {})\n",
                     r["path"].get<std::string>(), r["ir_version"].get<int64_t>(), r["opset_version"].get<int64_t>(),
                     r["producer"].get<std::string>(), r["nodes"].get<uint64_t>(), r["files"].size(),
                     r["files"].size() == 1 ? "" : "s", human_bytes(r["file_size"]));
  else
    o += fmt::format("{}: {} ({} file{}, {})\n", r["path"].get<std::string>(), fmt_name, r["files"].size(),
                     r["files"].size() == 1 ? "" : "s", human_bytes(r["file_size"]));
  if (r.contains("config")) {
    o += "\nconfig:\n";
    for (auto& [k, v] : r["config"].items()) o += fmt::format("  {:<26} {}\n", k, json_scalar(v));
  }
  if (r.contains("tokenizer_files")) {
    o += "tokenizer files:";
    for (auto& f : r["tokenizer_files"]) {
      o.push_back(' ');
      o.append(f.get<std::string>());
    }
    o += "\n";
  }
  if (fmt_name == "gguf") {
    o += fmt::format("\nmetadata ({} keys):\n", r["metadata"].size());
    for (auto& kv : r["metadata"]) {
      auto& v = kv["value"];
      std::string val;
      if (v.is_object() && v.contains("array_of")) {
        val = fmt::format("[{} x {}]", v["array_of"].get<std::string>(), v["length"].get<uint64_t>());
        std::string head;
        for (size_t i = 0; i < v["head"].size() && i < 6; ++i) head += (i ? ", " : "") + json_scalar(v["head"][i]);
        if (!head.empty()) val += " [" + head + (v["length"].get<uint64_t>() > 6 ? ", ...]" : "]");
      } else {
        val = json_scalar(v);
      }
      o += fmt::format("  {:<42} {:<8} {}\n", kv["key"].get<std::string>(), kv["type"].get<std::string>(), val);
    }
  } else if (!r["metadata"].empty()) {
    o += "\nmetadata:\n";
    for (auto& [k, v] : r["metadata"].items()) o += fmt::format("  {:<26} {}\n", k, json_scalar(v));
  }
  auto& ts = r["tensors"];
  o += fmt::format("\ntensors ({}):\n  {:<40} {:<8} {:<20} {:>12} {:>7}\n", ts.size(), "name", "type", "shape", "bytes", "bpw");
  size_t shown = 0;
  for (auto& t : ts) {
    if (max_tensors && shown == max_tensors) {
      o += fmt::format("  ... {} more (use --all to list every tensor)\n", ts.size() - shown);
      break;
    }
    o += fmt::format("  {:<40} {:<8} {:<20} {:>12} {:>7.3f}\n", t["name"].get<std::string>(), t["type"].get<std::string>(),
                     shape_str(t["shape"]), t["bytes"].get<uint64_t>(), t["bits_per_weight"].get<double>());
    ++shown;
  }
  o += "\ntypes:\n";
  for (auto& [t, h] : r["type_histogram"].items())
    o += fmt::format("  {:<8} {:>5} tensors  {:>12}\n", t, h["tensors"].get<uint64_t>(), human_bytes(h["bytes"]));
  if (r.contains("palettized"))
    o += fmt::format("\npalettized: {} weights, {}-bit indices, {} (edgeq only: llama.cpp cannot load this file; "
                     "bits per weight include the tables)\n",
                     r["palettized"]["tensors"].get<uint64_t>(), r["palettized"]["bits"].get<int>(),
                     r["palettized"]["group"].get<int64_t>() == 0
                         ? std::string("one table per tensor")
                         : fmt::format("one table per {} rows", r["palettized"]["group"].get<int64_t>()));
  uint64_t params = r["parameters"];
  o += fmt::format("\nparameters: {} ({:.2f} M)\ntensor data: {} ({} bytes)\nbits per weight: {:.4f}\n", params,
                   static_cast<double>(params) / 1e6, human_bytes(r["tensor_bytes"]), r["tensor_bytes"].get<uint64_t>(),
                   r["bits_per_weight"].get<double>());
  return o;
}

}  // namespace edgeq
