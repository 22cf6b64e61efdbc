// edgeq tokenize MODEL.gguf (-p TEXT | -f FILE) [--no-bos] [--no-parse-special] [--ids] [--json]
// Tokenizes like llama.cpp's llama-tokenize: BOS (and EOS) added when the vocabulary asks for it, special
// tokens parsed unless --no-parse-special.
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "command.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/base/error.h"
#include "edgeq/formats/text_input.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/runtime/tokenizer.h"

namespace cmd_tokenize {  // named, not anonymous: cli/ compiles as a unity build

struct Opts {
  std::string model, prompt, file;
  bool no_bos = false, no_parse_special = false, ids_only = false, json = false;
};

std::function<int()> setup(CLI::App& app) {
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("tokenize", "Tokenize text with a GGUF model's vocabulary (same ids as llama.cpp's llama-tokenize)");
  sub->add_option("model", o->model, "GGUF file with tokenizer.ggml.* metadata (a model or a vocab-only file)")->required();
  auto* p = sub->add_option("-p,--prompt", o->prompt, "Text to tokenize");
  auto* f = sub->add_option("-f,--file", o->file, "File whose whole content is tokenized");
  p->excludes(f);
  f->excludes(p);
  sub->add_flag("--no-bos", o->no_bos, "Do not add BOS/EOS even when the vocabulary adds them (add_special = false)");
  sub->add_flag("--no-parse-special", o->no_parse_special, "Treat control tokens such as <|im_start|> as plain text");
  sub->add_flag("--ids", o->ids_only, "Print only the ids, as [1, 2, 3]");
  sub->add_flag("--json", o->json, "Print {\"n_tokens\", \"ids\", \"pieces\"} as one JSON document");
  return [o, p, f]() {
    if (p->count() == 0 && f->count() == 0) edgeq::fail("tokenize: give the text with -p TEXT or -f FILE");
    const std::string text = f->count() ? edgeq::read_text_input(o->file) : o->prompt;
    auto gguf = edgeq::GgufFile::open(o->model);
    const edgeq::Tokenizer tok = edgeq::Tokenizer::from_gguf(gguf);
    const bool add_special = tok.add_bos() && !o->no_bos;  // llama-tokenize's rule
    const std::vector<int32_t> ids = tok.tokenize(text, add_special, !o->no_parse_special);
    if (o->json) {
      nlohmann::json j;
      j["model"] = o->model;
      j["n_tokens"] = ids.size();
      j["ids"] = ids;
      std::vector<std::string> pieces;
      pieces.reserve(ids.size());
      for (int32_t id : ids) pieces.push_back(tok.token_to_piece(id));
      j["pieces"] = pieces;
      // pieces may be partial UTF-8 sequences (byte tokens): replace invalid bytes with U+FFFD
      std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else if (o->ids_only) {
      std::string s = "[";
      for (size_t i = 0; i < ids.size(); ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
      s += "]";
      std::printf("%s\n", s.c_str());
    } else {
      for (int32_t id : ids) {
        const std::string piece = tok.token_to_piece(id);
        std::printf("%6d -> '%.*s'\n", id, static_cast<int>(piece.size()), piece.data());
      }
    }
    return 0;
  };
}


}  // namespace cmd_tokenize
