// Flags shared by several subcommands, defined once so every command applies the same rule.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>

#include "edgeq/formats/gguf.h"
#include "edgeq/runtime/model.h"

namespace edgeq::cli {

// -t/--threads N: 0 = all cores, 1..4x cores (edgeq::resolve_threads); anything else is a usage error.
// short_flag = false leaves -t to the command (quantize's -t is --type, as it always was).
CLI::Option* add_threads_option(CLI::App* sub, int& threads, const std::string& extra_help = "", bool short_flag = true);
// -c/--ctx N: a context size of 4..2^20 tokens.
CLI::Option* add_ctx_option(CLI::App* sub, int64_t& ctx, const std::string& help);
// --chunks N: -1 (default) = all, else at least 1.
CLI::Option* add_chunks_option(CLI::App* sub, int64_t& chunks);

// --split-max-size SIZE / --split-max-tensors N (one of them, as gguf-split): write a split GGUF.
void add_split_options(CLI::App* sub, edgeq::GgufSplitOptions& split);

// llama.cpp's warning when a context larger than the model was trained with is asked for (n_ctx 0: none).
void warn_if_beyond_training_context(const edgeq::runtime::Model& model, int64_t n_ctx);

}  // namespace edgeq::cli
