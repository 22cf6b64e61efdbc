// Flags shared by several subcommands, defined once so every command applies the same rule.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/runtime/model.h"

namespace edgeq::cli {

// A usage error found after parsing (a flag's value, a flag combination): main prints it and exits 2.
struct UsageError : edgeq::Error {
  using edgeq::Error::Error;
};
// Runs f, turning the edgeq::Error it throws into a UsageError: checks of what the user typed.
template <typename F>
void as_usage_error(F&& f) {
  try {
    f();
  } catch (const UsageError&) {
    throw;
  } catch (const edgeq::Error& e) {
    throw UsageError(e.what());
  }
}

// A whole number in [lo, hi] (or exactly `also`), else a message naming the flag and the allowed range.
CLI::Validator whole_number(std::string flag, int64_t lo, int64_t hi, std::string range_text,
                            std::optional<int64_t> also = std::nullopt);
// The comma-separated items of a list flag's values; an empty item ("Q8_0,,Q4_0", a trailing comma) is a
// UsageError (CLI11's delimiter drops empty items silently).
std::vector<std::string> split_list(const std::string& flag, const std::vector<std::string>& values);

// -t/--threads N: 0 = all cores, 1..4x cores (edgeq::resolve_threads); anything else is a usage error.
// short_flag = false leaves -t to the command (quantize's -t is --type, as it always was).
CLI::Option* add_threads_option(CLI::App* sub, int& threads, const std::string& extra_help = "", bool short_flag = true);
// -c/--ctx N: a context size of 4..2^20 tokens.
CLI::Option* add_ctx_option(CLI::App* sub, int64_t& ctx, const std::string& help);
// --chunks N: -1 (default, as llama-perplexity) = all, else at least 1.
CLI::Option* add_chunks_option(CLI::App* sub, int64_t& chunks);

// --split-max-size SIZE / --split-max-tensors N (one of them, as gguf-split): write a split GGUF.
void add_split_options(CLI::App* sub, edgeq::GgufSplitOptions& split);

// An output that would replace an existing file in the source checkpoint's directory (generation_config.json,
// LICENSE, ...: files the command does not read, so the input guard does not cover them) is refused unless
// force. src is a checkpoint directory or an .onnx file (its directory); a GGUF source has no checkpoint
// directory. New files there (`convert ckpt -o ckpt/model.gguf`, llama.cpp's habit) are fine.
void check_not_replacing_checkpoint_file(const std::string& src, const std::string& out, bool force);

// llama.cpp's warning when a context larger than the model was trained with is asked for (n_ctx 0: none).
void warn_if_beyond_training_context(const edgeq::runtime::Model& model, int64_t n_ctx);

}  // namespace edgeq::cli
