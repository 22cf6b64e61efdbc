#include "options.h"

#include <charconv>
#include <cstdio>
#include <filesystem>

#include "edgeq/base/error.h"
#include "edgeq/base/thread_count.h"
#include "edgeq/formats/model_path.h"

namespace edgeq::cli {

CLI::Validator whole_number(std::string flag, int64_t lo, int64_t hi, std::string range_text,
                            std::optional<int64_t> also) {
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        int64_t v = 0;
        auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        if (ec == std::errc() && end == s.data() + s.size() && ((v >= lo && v <= hi) || (also && v == *also)))
          return {};
        return flag + " " + s + ": must be " + range_text;
      },
      "", flag);
}

std::vector<std::string> split_list(const std::string& flag, const std::vector<std::string>& values) {
  std::vector<std::string> out;
  for (const auto& v : values) {
    size_t pos = 0;
    for (;;) {
      const size_t comma = v.find(',', pos);
      std::string item = v.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      if (item.find_first_not_of(" \t") == std::string::npos)
        throw UsageError(fmt::format("{} {}: an item of the list is empty", flag, v));
      out.push_back(std::move(item));
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
  }
  return out;
}

CLI::Option* add_threads_option(CLI::App* sub, int& threads, const std::string& extra_help, bool short_flag) {
  const std::string range = fmt::format("0 (all {} cores) or 1..{} on this machine", available_cores(), max_threads());
  return sub
      ->add_option(short_flag ? "-t,--threads" : "--threads", threads,
                   fmt::format("Worker threads: 0 = all cores (default), at most {} here{}", max_threads(), extra_help))
      ->check(whole_number("--threads", 0, max_threads(), range));
}

CLI::Option* add_ctx_option(CLI::App* sub, int64_t& ctx, const std::string& help) {
  constexpr int64_t kMax = int64_t{1} << 20;
  return sub->add_option("-c,--ctx", ctx, help)->check(whole_number("--ctx", 4, kMax, fmt::format("4..{}", kMax)));
}

CLI::Option* add_chunks_option(CLI::App* sub, int64_t& chunks) {
  return sub->add_option("--chunks", chunks, "Evaluate at most N chunks, N >= 1; -1 = all (default, as llama.cpp)")
      ->check(whole_number("--chunks", 1, INT64_MAX, "a whole number >= 1, or -1 for all", -1));
}

void add_split_options(CLI::App* sub, edgeq::GgufSplitOptions& split) {
  auto* size = sub->add_option_function<std::string>(
                      "--split-max-size",
                      [&split](const std::string& s) { split.max_bytes = edgeq::parse_split_size(s); },
                      "Write a split GGUF (as llama.cpp's gguf-split): at most SIZE of tensor data per file, SIZE a "
                      "whole number with M (10^6 bytes) or G (10^9), e.g. 500M, 2G. Files are OUT-00001-of-0000N.gguf "
                      "(OUT without .gguf); llama.cpp and edgeq open the set by its first file")
                  ->type_name("SIZE")
                  ->check(CLI::Validator(
                      [](std::string& s) -> std::string {
                        try {
                          (void)edgeq::parse_split_size(s);
                          return {};
                        } catch (const edgeq::Error& e) {
                          return e.what();
                        }
                      },
                      "", "SIZE"));
  auto* tensors = sub->add_option("--split-max-tensors", split.max_tensors,
                                  "Write a split GGUF with at most N tensors per file (as gguf-split; see --split-max-size)")
                      ->type_name("N")
                      ->check(whole_number("--split-max-tensors", 1, INT64_MAX, "a whole number >= 1"));
  size->excludes(tensors);
  tensors->excludes(size);
}

void check_not_replacing_checkpoint_file(const std::string& src, const std::string& out, bool force) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (force || out.empty() || !fs::exists(out, ec) || !fs::is_regular_file(out, ec)) return;
  const ModelPath m = classify_model_path(src);
  if (!m.is_checkpoint()) return;
  const fs::path dir = m.dir;
  const fs::path out_dir = fs::path(out).has_parent_path() ? fs::path(out).parent_path() : fs::path(".");
  if (fs::equivalent(dir, out_dir, ec))
    fail("{}: is a file of the source checkpoint {}; refusing to replace it (--force to replace it)", out, src);
}

void warn_if_beyond_training_context(const edgeq::runtime::Model& model, int64_t n_ctx) {
  const int64_t train = model.config().n_ctx_train;
  if (train > 0 && n_ctx > train)
    std::fprintf(stderr, "warning: %s: model was trained on only %lld context tokens (%lld specified)\n",
                 model.path().c_str(), static_cast<long long>(train), static_cast<long long>(n_ctx));
}

}  // namespace edgeq::cli
