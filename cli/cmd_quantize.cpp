// edgeq quantize SRC -o OUT.gguf --type T [--imatrix FILE] [--threads N] [--tensor-type R=T]...
//   or llama-quantize's positional form: edgeq quantize SRC OUT TYPE [THREADS]
//   [--output-tensor-type T] [--token-embedding-type T] [--pure] [--leave-output-tensor] [--allow-requantize] [--no-edgeq-metadata] [--json]
#include <charconv>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "calibration_input.h"
#include "command.h"
#include "edgeq/arch/arch.h"
#include "edgeq/base/human_bytes.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/base/thread_count.h"
#include "edgeq/runtime/model.h"
#include "edgeq/runtime/tokenizer.h"
#include "options.h"
#include "edgeq/base/error.h"
#include "edgeq/calibrate/methods.h"
#include "edgeq/convert/quantize_source.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/quant/policy.h"
#include "edgeq/quant/quantize.h"
#include "progress.h"
#include "quantize_budget.h"

namespace cmd_quantize {  // named, not anonymous: cli/ compiles as a unity build

namespace q = edgeq::quant;
using edgeq::human_bytes;

struct Opts {
  std::string src, out, type, imatrix, output_tensor_type, token_embedding_type;
  std::vector<std::string> positional;  // llama-quantize's OUT TYPE [THREADS] after SRC
  std::vector<std::string> tensor_types;
  std::string method, calib;       // calibration methods (calibration_input.h)
  bool act_order = false;          // --act-order: GPTQ's columns by decreasing Hessian diagonal
  std::vector<std::string> data;
  int threads = 0;
  int64_t pal_group = 0;
  const CLI::Option* pal_group_opt = nullptr;  // its count() tells whether --pal-group was given
  bool pure = false, leave_output = false, allow_requantize = false, json = false, no_edgeq_metadata = false, force = false;
  bool list_types = false;
  edgeq::GgufSplitOptions split;
  edgeq::cli::BudgetFlags budget;  // --target-size / --target-bpw / --plan / --budget-job (quantize_budget.h)
};

// llama-quantize's `SRC OUT TYPE [THREADS]`: fills out/type/threads unless the flags already did.
void apply_positional(Opts& o) {
  const auto& p = o.positional;
  if (p.size() > 3)
    edgeq::fail("quantize: too many arguments after the source (expected OUT TYPE [THREADS], as llama-quantize)");
  if (p.size() >= 1) {
    if (!o.out.empty()) edgeq::fail("quantize: the output is given twice ({} and -o {})", p[0], o.out);
    o.out = p[0];
  }
  if (p.size() >= 2) {
    if (!o.type.empty()) edgeq::fail("quantize: the type is given twice ({} and --type {})", p[1], o.type);
    o.type = p[1];
  }
  if (p.size() == 3) {
    int n = -1;
    auto [end, ec] = std::from_chars(p[2].data(), p[2].data() + p[2].size(), n);
    if (ec != std::errc() || end != p[2].data() + p[2].size()) edgeq::fail("quantize: THREADS '{}' is not a whole number", p[2]);
    o.threads = edgeq::resolve_threads(n, "THREADS");
  }
  if (o.out.empty()) edgeq::fail("quantize: no output file (-o OUT.gguf, or llama-quantize's SRC OUT TYPE)");
  if (o.type.empty()) edgeq::fail("quantize: no quantization type (--type T, or llama-quantize's SRC OUT TYPE; --list-types)");
}

void print_types() {
  std::printf("%-8s %4s  %-7s %6s  %s\n", "TYPE", "ID", "BLOCK", "BPW", "what it is (llama-quantize's figures)");
  for (const auto& t : q::file_types()) {
    const auto* bt = edgeq::ggml_type_info(t.default_type);
    const double bpw = t.palette_bits > 0 ? double(t.palette_bits)
                       : bt               ? 8.0 * double(bt->type_size) / double(bt->block_size)
                                          : 0.0;
    const bool writes = t.palette_bits > 0 || !bt || !bt->quantized || q::can_quantize(t.default_type);
    std::printf("%-8s %4u  %-7s %6.2f  %s%s%s\n", t.name, static_cast<unsigned>(t.ftype),
                t.palette_bits > 0 ? "LUT" : edgeq::ggml_type_name(t.default_type), bpw, t.description,
                t.needs_imatrix ? " [needs an imatrix]" : "", writes ? "" : " [read only: no encoder yet]");
  }
  std::printf("\nBPW is the base block type's; a mix keeps some tensors at higher precision, so the file's bits per "
              "weight are a little higher (edgeq quantize reports them).\n"
              "PALn files (edgeq's k-means look-up tables, --pal-group) load in edgeq only, not in llama.cpp; their "
              "BPW is the index bits, the tables add 2^n x 16 bits per table (included in every reported bpw). "
              "`edgeq quantize PAL_FILE OUT --type Q4_K_M` re-encodes one into a standard file.\n"
              "[needs an imatrix]: llama-quantize refuses the type without importance data, and so does edgeq: give "
              "--imatrix FILE, or --data TEXT to calibrate first. [read only]: edgeq evaluates and re-encodes such "
              "files but cannot write the type yet.\n");
}

std::string dims_str(const std::vector<uint64_t>& d) {
  std::string s;
  for (size_t i = 0; i < d.size(); ++i) s += (i ? " x " : "") + std::to_string(d[i]);
  return s;
}

q::QuantizeSource open_source(const std::string& src, int threads) {
  return edgeq::convert::open_quantize_source(src, threads);
}

// The flags' values and combinations (every error here is a usage error).
void check_flags(Opts& o, q::QuantizeOptions& qo) {
  apply_positional(o);
  qo.policy.ftype = q::parse_file_type(o.type);
  if (q::file_type_info(qo.policy.ftype).needs_imatrix && o.imatrix.empty() && o.calib.empty() && o.data.empty())
    edgeq::fail("--type {}: needs an importance matrix, as llama-quantize refuses IQ1_S, IQ1_M, IQ2_S, IQ2_XXS, "
                "IQ2_XS and Q2_K_S without one: give --imatrix FILE, or --data TEXT to calibrate first",
                q::file_type_info(qo.policy.ftype).name);
  for (auto& s : o.tensor_types) qo.policy.tensor_types.push_back(q::parse_tensor_type_override(s));
  if (!o.output_tensor_type.empty()) qo.policy.output_tensor_type = q::parse_tensor_type(o.output_tensor_type);
  if (!o.token_embedding_type.empty()) qo.policy.token_embedding_type = q::parse_tensor_type(o.token_embedding_type);
  const int pal_bits = q::file_type_info(qo.policy.ftype).palette_bits;
  if (o.pal_group_opt && o.pal_group_opt->count() > 0) {
    if (pal_bits == 0) edgeq::fail("--pal-group applies to the PAL types only (--type {})", o.type);
    if (o.pal_group <= 0)
      edgeq::fail("--pal-group {}: a group needs at least one row (omit it for one table per tensor)", o.pal_group);
    qo.policy.palette_group = static_cast<uint64_t>(o.pal_group);
  }
  if (const auto pm = edgeq::calibrate::parse_method(o.method);
      pal_bits > 0 && pm && !edgeq::calibrate::method_info(*pm).palette_ok) {
    std::string ok;
    for (const auto& m : edgeq::calibrate::method_table())
      if (m.palette_ok) ok += (ok.empty() ? "" : " or ") + std::string(m.name);
    edgeq::fail("--method {}: the PAL types take {} (the importance weights the k-means)", o.method, ok);
  }
  qo.policy.pure = o.pure;
  qo.policy.leave_output_tensor = o.leave_output;
  if (o.leave_output && !o.output_tensor_type.empty())
    edgeq::fail("--output-tensor-type {} with --leave-output-tensor: the output matrix is left unquantized, so the "
                "type would be ignored; give one of them", o.output_tensor_type);
  edgeq::cli::check_quantize_method_options(o.method, o.calib, o.data, !o.imatrix.empty(), o.act_order);
}

int run(Opts& o) {
  if (o.list_types) {
    print_types();
    return 0;
  }
  if (o.src.empty()) edgeq::fail("quantize: no source (a .gguf, a Hugging Face checkpoint directory or a .onnx model)");
  if (o.budget.active()) {
    std::string other;  // the fixed mixes' flags
    if (!o.type.empty() || o.positional.size() > 1) other = "--type";
    else if (!o.positional.empty()) other = "a positional OUT";
    else if (!o.imatrix.empty()) other = "--imatrix";
    else if (!o.calib.empty()) other = "--calib";
    else if (!o.tensor_types.empty()) other = "--tensor-type";
    else if (o.pure || o.leave_output || o.act_order) other = "--pure/--leave-output-tensor/--act-order";
    else if (!o.output_tensor_type.empty() || !o.token_embedding_type.empty()) other = "--output-tensor-type/--token-embedding-type";
    else if (o.split.enabled()) other = "--split-*";
    return edgeq::cli::run_budget(o.budget, {o.src, o.out, o.method, o.data, edgeq::resolve_threads(o.threads), o.json, !o.no_edgeq_metadata},
                                  other);
  }
  // Everything the user typed is checked before any file is opened or written: a bad value or combination is
  // a usage error (exit 2).
  q::QuantizeOptions qo;
  edgeq::cli::as_usage_error([&] { check_flags(o, qo); });
  qo.threads = edgeq::resolve_threads(o.threads);
  qo.allow_requantize = o.allow_requantize;
  qo.record_method = !o.no_edgeq_metadata;
  qo.split = o.split;
  // The output must load in the runtime: the same model and tokenizer checks perplexity makes.
  qo.check_output = [src = o.src](const edgeq::GgufFile& header) {
    if (!edgeq::runtime::Model::supports(header.architecture())) return;
    try {
      edgeq::runtime::Model::check_header(header);
      (void)edgeq::Tokenizer::from_gguf(header);
    } catch (const edgeq::Error& e) {  // the header is the output's, its values the source's: name the source
      std::string m = e.what();
      if (m.rfind(header.path() + ": ", 0) == 0) m.erase(0, header.path().size() + 2);
      edgeq::fail("{}: {}", src, m);
    }
  };
  // A directory or a device is refused before anything is read (a split set's file names are known, and
  // checked, once the tensor types are planned, before any tensor is read).
  if (!o.split.enabled()) edgeq::check_output_path(o.out);

  q::Importance imp;
  if (!o.imatrix.empty()) {
    imp = q::load_importance(o.imatrix);
    qo.importance = &imp;
  }
  q::QuantizeSource src = open_source(o.src, qo.threads);
  const auto method = edgeq::cli::setup_quantize_method(o.method, o.calib, o.data, o.src, src, qo, qo.threads, o.act_order);
  if (!o.split.enabled()) edgeq::check_output_path(o.out);  // every input is known now: it replaces none
  edgeq::cli::check_not_replacing_checkpoint_file(o.src, o.out, o.force);

  edgeq::cli::Progress progress("quantize", !o.json);
  nlohmann::json tensors = nlohmann::json::array();
  qo.on_tensor = [&](const q::TensorProgress& p) {
    tensors.push_back({{"name", p.name},
                       {"dims", p.dims},
                       {"from", edgeq::ggml_type_name(p.from)},
                       {"type", p.palette_bits ? fmt::format("PAL{}", p.palette_bits) : edgeq::ggml_type_name(p.to)},
                       {"quantized", p.quantized},
                       {"fallback", p.fallback},
                       {"imatrix", p.has_importance},
                       {"bytes", p.bytes_after}});
    progress.update(double(p.index + 1) / double(p.count),
                    fmt::format("[{}/{}] {} {} {} -> {} {} -> {}{}{}", p.index + 1, p.count, p.name, dims_str(p.dims),
                                edgeq::ggml_type_name(p.from),
                                p.palette_bits ? fmt::format("PAL{}", p.palette_bits) : edgeq::ggml_type_name(p.to),
                                human_bytes(p.bytes_before),
                                human_bytes(p.bytes_after), p.fallback ? " (fallback)" : "",
                                p.has_importance ? " (imatrix)" : ""));
  };

  q::QuantizeReport r = q::quantize_model(src, o.out, qo);
  const auto& fti = q::file_type_info(r.ftype);
  // An architecture the runtime does not evaluate is quantized tensor by tensor as llama-quantize does; say that
  // edgeq's perplexity cannot check the result.
  std::string arch;
  for (const auto& [k, v] : src.metadata)
    if (k == "general.architecture" && v.type() == edgeq::GgufType::STRING) arch = v.as_string();
  const bool evaluated = arch.empty() || edgeq::runtime::Model::supports(arch);
  if (!evaluated)
    std::fprintf(stderr,
                 "edgeq: note: architecture '%s' is quantized tensor by tensor as llama-quantize does, but edgeq's "
                 "runtime does not evaluate it (it evaluates %s): perplexity cannot check %s; llama.cpp can\n",
                 arch.c_str(), edgeq::arch::runtime_list().c_str(), r.output.c_str());
  const double mbps = r.seconds > 0 ? double(r.bytes_before) / 1e6 / r.seconds : 0.0;

  if (o.json) {
    nlohmann::json j = {{"input", o.src},
                        {"architecture", arch},
                        {"runtime_evaluates", evaluated},
                        {"output", r.output},
                        {"outputs", r.outputs},
                        {"type", fti.name},
                        {"file_type", static_cast<uint32_t>(r.ftype)},
                        {"threads", r.threads},
                        {"imatrix", o.imatrix.empty() ? nlohmann::json(nullptr) : nlohmann::json(o.imatrix)},
                        {"n_tensors", r.n_tensors},
                        {"n_quantized", r.n_quantized},
                        {"n_fallback", r.n_fallback},
                        {"n_with_imatrix", r.n_with_importance},
                        {"n_elements", r.n_elements},
                        {"bytes_before", r.bytes_before},
                        {"bytes_after", r.bytes_after},
                        {"file_size", r.file_size},
                        {"bpw_before", r.bpw_before()},
                        {"bpw_after", r.bpw_after()},
                        {"seconds", r.seconds},
                        {"mb_per_s", mbps},
                        {"type_counts", r.type_counts},
                        {"tensors", tensors}};
    std::fputs(j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace).c_str(), stdout);
    std::fputc('\n', stdout);
    return 0;
  }

  std::printf("quantized %s -> %s\n", o.src.c_str(), r.output.c_str());
  std::printf("  %-12s %s (general.file_type %u)%s%s\n", "type", fti.name, static_cast<unsigned>(r.ftype),
              o.pure ? ", pure" : "", o.imatrix.empty() ? "" : (", imatrix " + o.imatrix).c_str());
  std::printf("  %-12s %zu (%zu quantized, %zu fallbacks, %zu with imatrix)\n", "tensors", r.n_tensors,
              r.n_quantized, r.n_fallback, r.n_with_importance);
  std::printf("  %-12s %.3f M\n", "weights", double(r.n_elements) / 1e6);
  std::printf("  %-12s %12s  %6.2f bpw\n", "size before", human_bytes(r.bytes_before).c_str(), r.bpw_before());
  std::printf("  %-12s %12s  %6.2f bpw  (%.2fx smaller)\n", "size after", human_bytes(r.bytes_after).c_str(),
              r.bpw_after(), r.bytes_after ? double(r.bytes_before) / double(r.bytes_after) : 0.0);
  std::printf("  %-12s %llu bytes\n", "file size", static_cast<unsigned long long>(r.file_size));
  if (r.outputs.size() > 1) std::printf("  %-12s %zu files (open the set by the first)\n", "split", r.outputs.size());
  std::printf("  %-12s %.3f s on %d thread%s (%.1f MB/s of source data)\n", "time", r.seconds, r.threads,
              r.threads == 1 ? "" : "s", mbps);
  std::printf("  %-12s", "types");
  for (auto& [name, n] : r.type_counts) std::printf(" %s:%zu", name.c_str(), n);
  std::printf("\n");
  return 0;
}

std::function<int()> setup(CLI::App& app) {
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand(
      "quantize",
      "Quantize a GGUF (or an HF checkpoint / ONNX model, converted on the fly) with a llama.cpp mix, or palettize it "
      "(PAL2..PAL8: k-means look-up tables; such files load in edgeq only, not in llama.cpp)");
  sub->add_option("src", o->src,
                  "Source: a .gguf file (F32/F16/BF16, palettized, or quantized with --allow-requantize), a Hugging Face "
                  "checkpoint directory or an ONNX model (converted and quantized in one pass)");
  sub->add_option("out_type_threads", o->positional,
                  "llama-quantize's positional form: OUT TYPE [THREADS] after SRC (instead of -o, --type, --threads)");
  sub->add_option("-o,--output", o->out,
                  "Output GGUF path (written to a temp file, renamed when complete; never one of the inputs)");
  std::string types;
  for (auto& t : q::file_types()) types += std::string(types.empty() ? "" : ", ") + t.name;
  sub->add_option("-t,--type", o->type,
                  "Quantization mix, by llama-quantize's name or number (e.g. Q4_K_M or 15): " + types +
                      " (see --list-types). PALn: n-bit k-means look-up tables for every 2-D weight (output.weight keeps "
                      "Q6_K as in llama.cpp's mixes; --pure palettizes it too), edgeq's runtime only (llama.cpp cannot "
                      "load them); a PAL source re-encodes to any other type");
  o->pal_group_opt = sub->add_option("--pal-group", o->pal_group,
                  "PAL types: one look-up table per N output rows (N must divide every palettized tensor's rows; "
                  "default: one table per tensor)");
  sub->add_flag("--list-types", o->list_types, "List the quantization types: id, block type, bits per weight, use");
  sub->add_option("--imatrix", o->imatrix, "Importance matrix file (llama.cpp imatrix format)");
  std::string method_help = edgeq::calibrate::method_names(" | ") +
                            ": how weights are rounded using calibration (default imatrix when --calib/--data is "
                            "given); all write standard llama.cpp blocks.";
  for (const auto& m : edgeq::calibrate::method_table()) method_help += fmt::format(" {}: {}.", m.name, m.summary);
  sub->add_option("--method", o->method, method_help);
  sub->add_flag("--act-order", o->act_order,
                "With --method gptq or auto: GPTQ rounds the columns in order of decreasing Hessian diagonal (the "
                "loudest inputs first; every block's scales fixed up front by the format's own search) instead of "
                "left to right; the output is the same standard block type. Off by default");
  sub->add_option("--calib", o->calib, "Statistics from `edgeq calibrate` (.gguf; --hessian for awq/gptq/auto)");
  sub->add_option("--data", o->data, "Calibration text files: calibrate in the same command (n_ctx 256, all chunks)");
  edgeq::cli::add_threads_option(sub, o->threads, "; the output is identical for any count", false);
  sub->add_option("--tensor-type", o->tensor_types,
                  "REGEX=TYPE: tensors whose name matches REGEX get TYPE (repeatable, first match wins)");
  sub->add_option("--output-tensor-type", o->output_tensor_type, "Type of output.weight (e.g. Q8_0, F16)");
  sub->add_option("--token-embedding-type", o->token_embedding_type, "Type of token_embd.weight");
  sub->add_flag("--pure", o->pure, "No mix rules: every quantized tensor gets the mix's base type");
  sub->add_flag("--leave-output-tensor", o->leave_output, "Keep output.weight in the source type");
  sub->add_flag("--allow-requantize", o->allow_requantize, "Allow a source whose tensors are already quantized");
  sub->add_flag("--force", o->force, "Let -o replace an existing file in the source checkpoint's directory");
  sub->add_flag("--no-edgeq-metadata", o->no_edgeq_metadata,
                "Do not record edgeq.quantize.method (by default the method and mix are recorded); the metadata, and "
                "so the file size, are then exactly what llama-quantize writes for the same source");
  edgeq::cli::add_split_options(sub, o->split);
  edgeq::cli::add_budget_options(sub, o->budget);
  sub->add_flag("--json", o->json, "Print the summary as one JSON document (no progress lines)");
  sub->callback([o]() {  // SRC is required unless only --list-types is asked for
    if (!o->list_types && o->src.empty()) throw CLI::RequiredError("src");
  });
  return [o]() { return run(*o); };
}


}  // namespace cmd_quantize
