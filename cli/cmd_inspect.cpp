// edgeq inspect PATH [--json] [--all]
#include <cstdio>

#include "command.h"
#include "edgeq/quant/inspect.h"

namespace cmd_inspect {  // named, not anonymous: cli/ compiles as a unity build

struct Opts {
  std::string path;
  bool json = false;
  bool all = false;
};

std::function<int()> setup(CLI::App& app) {
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("inspect",
                                 "Describe a GGUF file, a safetensors file, a Hugging Face checkpoint directory, an ONNX "
                                 "model or a llama.cpp imatrix file");
  sub->add_option("path", o->path,
                  "GGUF file, .safetensors file, HF checkpoint directory, .onnx file (or a directory holding "
                  "model.onnx), or imatrix file (llama-imatrix's legacy format)")
      ->required();
  sub->add_flag("--json", o->json, "Print one JSON document instead of text");
  sub->add_flag("--all", o->all, "List every tensor or imatrix entry (text output shows the first 40 otherwise)");
  return [o]() {
    auto report = edgeq::quant::inspect_path(o->path);
    if (o->json) {
      std::fputs(report.dump(1, ' ', false, nlohmann::json::error_handler_t::replace).c_str(), stdout);
      std::fputc('\n', stdout);
    } else {
      std::fputs(edgeq::quant::render_inspection(report, o->all ? 0 : 40).c_str(), stdout);
    }
    return 0;
  };
}


}  // namespace cmd_inspect
