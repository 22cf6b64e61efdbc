// edgeq convert SRC -o OUT.gguf [--outtype f16|f32|bf16|q8_0|auto] [--threads N] [--pre NAME] [--name NAME] [--json]
#include <chrono>
#include <cstdio>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "command.h"
#include "edgeq/formats/mapped_file.h"
#include "options.h"
#include "edgeq/convert/convert.h"
#include "edgeq/convert/plan.h"
#include "progress.h"

namespace cmd_convert {  // named, not anonymous: cli/ compiles as a unity build

struct Opts {
  std::string src, out, outtype = "f16", pre, name;
  int threads = 0;
  bool json = false, force = false;
  edgeq::GgufSplitOptions split;
};

std::function<int()> setup(CLI::App& app) {
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("convert", "Convert a Hugging Face checkpoint (safetensors or ONNX export) to GGUF");
  sub->add_option("src", o->src, "HF checkpoint directory (config.json, safetensors, tokenizer files) or model.onnx")->required();
  sub->add_option("-o,--output", o->out,
                  "Output GGUF file (written to a temp file and renamed when complete; never one of the inputs)")
      ->required();
  sub->add_option("--outtype", o->outtype,
                  "Tensor type for 2-D weights: f16 (default, as llama.cpp's convert_hf_to_gguf.py), f32, bf16, q8_0, "
                  "or auto (llama.cpp's auto: f16 if the first tensor is F16, else bf16). Norms and biases stay F32.")
      ->check(CLI::IsMember({"auto", "f32", "f16", "bf16", "q8_0"}));
  edgeq::cli::add_threads_option(sub, o->threads, "; the output is identical for any count");
  sub->add_option("--pre", o->pre, "Force tokenizer.ggml.pre (for a BPE pre-tokenizer edgeq does not recognise)");
  sub->add_option("--name", o->name, "general.name (default: the source directory's name)");
  edgeq::cli::add_split_options(sub, o->split);
  sub->add_flag("--json", o->json, "Print a JSON summary on stdout");
  sub->add_flag("--force", o->force, "Let -o replace an existing file in the source checkpoint's directory");
  return [o]() {
    auto t0 = std::chrono::steady_clock::now();
    edgeq::convert::ConvertOptions co;
    co.outtype = o->outtype;
    co.force_pre = o->pre;
    co.threads = o->threads;
    co.name = o->name;
    // A directory or a device is refused before anything is read (a split set's names are known, and checked,
    // once the tensors are planned, before any is read).
    if (!o->split.enabled()) edgeq::check_output_path(o->out);
    auto plan = edgeq::convert::plan_conversion(o->src, co);
    if (!o->split.enabled()) edgeq::check_output_path(o->out);  // the checkpoint's files are known now
    edgeq::cli::check_not_replacing_checkpoint_file(o->src, o->out, o->force);
    edgeq::cli::Progress progress("convert", !o->json);
    auto res = edgeq::convert::convert_to_gguf(plan, o->out, "", o->threads, [&](const edgeq::convert::ConvertProgress& p) {
      progress.update(p.bytes_total ? static_cast<double>(p.bytes_done) / static_cast<double>(p.bytes_total) : 1.0,
                      fmt::format("[{}/{}] {} {}", p.index + 1, p.count, p.tensor->name, edgeq::ggml_type_name(p.type)));
    }, o->split);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (o->json) {
      nlohmann::json j = {{"output", res.path},      {"outputs", res.outputs}, {"arch", plan.arch},          {"outtype", res.outtype},
                          {"tensors", res.n_tensors}, {"file_size", res.file_size}, {"source_bytes", plan.source_bytes},
                          {"seconds", secs}};
      std::puts(j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      std::printf("%s: %s, %zu tensors, %s, %.1f MB in %.2f s\n", res.path.c_str(), plan.arch.c_str(), res.n_tensors,
                  res.outtype.c_str(), static_cast<double>(res.file_size) / 1e6, secs);
      if (res.outputs.size() > 1) std::printf("  split GGUF: %zu files, open it by the first\n", res.outputs.size());
    }
    return 0;
  };
}


}  // namespace cmd_convert
