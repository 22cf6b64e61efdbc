// Quantization mixes: which ggml type each tensor of a model gets for a named file type (Q4_K_M, ...),
// with the same rules as llama.cpp b4748's llama-quantize (llama_tensor_get_type / llama_model_quantize_impl),
// plus the user overrides of newer llama-quantize (--tensor-type REGEX=TYPE, first match wins).
//
// Decisions depend only on tensor names, shapes and a few hyperparameters, never on tensor data, so a whole
// model can be planned (types and byte sizes) before any weight is read.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "edgeq/formats/ggml_types.h"
#include "edgeq/formats/gguf.h"

namespace edgeq::quant {

// llama.cpp's llama_ftype values (written as general.file_type).
enum class FileType : uint32_t {
  ALL_F32 = 0,
  MOSTLY_F16 = 1,
  MOSTLY_Q4_0 = 2,
  MOSTLY_Q4_1 = 3,
  MOSTLY_Q8_0 = 7,
  MOSTLY_Q5_0 = 8,
  MOSTLY_Q5_1 = 9,
  MOSTLY_Q2_K = 10,
  MOSTLY_Q3_K_S = 11,
  MOSTLY_Q3_K_M = 12,
  MOSTLY_Q3_K_L = 13,
  MOSTLY_Q4_K_S = 14,
  MOSTLY_Q4_K_M = 15,
  MOSTLY_Q5_K_S = 16,
  MOSTLY_Q5_K_M = 17,
  MOSTLY_Q6_K = 18,
  MOSTLY_IQ2_XXS = 19,
  MOSTLY_IQ2_XS = 20,
  MOSTLY_Q2_K_S = 21,
  MOSTLY_IQ3_XS = 22,
  MOSTLY_IQ3_XXS = 23,
  MOSTLY_IQ1_S = 24,
  MOSTLY_IQ4_NL = 25,
  MOSTLY_IQ3_S = 26,
  MOSTLY_IQ3_M = 27,
  MOSTLY_IQ2_S = 28,
  MOSTLY_IQ2_M = 29,
  MOSTLY_IQ4_XS = 30,
  MOSTLY_IQ1_M = 31,
  MOSTLY_BF16 = 32,
  // edgeq's palettized files (formats/palette_layout.h): not llama.cpp values (its range ends far below), so
  // llama.cpp never mistakes such a file for one of its own types.
  EDGEQ_PAL2 = 4096 + 2,
  EDGEQ_PAL3 = 4096 + 3,
  EDGEQ_PAL4 = 4096 + 4,
  EDGEQ_PAL6 = 4096 + 6,
  EDGEQ_PAL8 = 4096 + 8,
};

struct FileTypeInfo {
  FileType ftype;
  const char* name;       // "Q4_K_M", as llama-quantize names it
  GgmlType default_type;  // the mix's base type (llama_model_quantize_impl's default_type); I8 for PAL
  const char* description;
  // > 0: a palettized type (PALn): every tensor llama.cpp's mixes quantize becomes an n-bit index tensor plus
  // an F16 look-up table (formats/palette_layout.h), the token embedding included, except the output matrix, which
  // keeps llama.cpp's mix rule (Q6_K; palettized too with --pure); no other mix rules apply. Only edgeq loads
  // these files.
  int palette_bits = 0;
  // llama-quantize refuses the mix without an importance matrix ("Please do not use IQ1_S, IQ1_M, IQ2_S, IQ2_XXS,
  // IQ2_XS or Q2_K_S quantization without an importance matrix"); edgeq asks for --imatrix, --calib or --data.
  bool needs_imatrix = false;
};

// The supported mixes, in llama-quantize's listing order, then edgeq's palettized types.
const std::vector<FileTypeInfo>& file_types();
const FileTypeInfo& file_type_info(FileType t);  // throws edgeq::Error for an unsupported value
std::optional<FileType> file_type_from_name(std::string_view name);  // case-insensitive
// Parses a mix name; throws edgeq::Error listing the valid names.
FileType parse_file_type(std::string_view name);
// Parses a ggml type name for an override (--tensor-type, --output-tensor-type); throws edgeq::Error
// for unknown names or types edgeq cannot write.
GgmlType parse_tensor_type(std::string_view name);
// llama.cpp b4748's refusal (llama_model_quantize_impl): writing tensor `name` as `type` in mix `ftype` without
// importance data for it "will be garbage", so llama-quantize stops. True for the block types whose row says
// needs_importance (IQ1_M except token_embd/output), and for Q2_K in the Q2_K_S mix except token_embd.
bool tensor_needs_importance(FileType ftype, std::string_view name, GgmlType type);
// Whether quantizing to the mix needs importance data at all: llama-quantize refuses it without, or its main type
// (a layer's weights) needs it (IQ2_M: IQ2_S).
bool mix_needs_importance(FileType ftype);

// The hyperparameters the rules look at, read from GGUF metadata (<arch>.block_count, head counts, ...).
struct ModelParams {
  std::string arch;   // general.architecture
  int n_layer = 0;    // <arch>.block_count
  int n_head = 0;     // <arch>.attention.head_count
  int n_head_kv = 0;  // <arch>.attention.head_count_kv (defaults to n_head)
  int n_expert = 0;   // <arch>.expert_count
  int n_gqa() const { return n_head > 0 && n_head_kv > 0 ? n_head / n_head_kv : 1; }
  bool is_70b() const;  // llama.cpp's LLM_TYPE_70B (80 layers with grouped-query attention)
  static ModelParams from_metadata(const std::vector<std::pair<std::string, GgufValue>>& kv);
};

struct TensorTypeOverride {
  std::string pattern;  // ECMAScript regex, matched with regex_search against the tensor name
  GgmlType type;
};
// Parses "REGEX=TYPE"; throws edgeq::Error for a missing '=', a bad regex or an unknown type.
TensorTypeOverride parse_tensor_type_override(std::string_view spec);

struct PolicyOptions {
  FileType ftype = FileType::MOSTLY_Q4_K_M;
  std::vector<TensorTypeOverride> tensor_types;  // first match wins
  std::optional<GgmlType> output_tensor_type;
  std::optional<GgmlType> token_embedding_type;
  bool pure = false;                 // every quantized tensor gets the mix's default type
  bool leave_output_tensor = false;  // output.weight is not quantized
  bool has_imatrix = false;          // some rules depend on whether an importance matrix is used
  uint64_t palette_group = 0;        // PAL types: output rows per look-up table (0: one table per tensor)
};

struct TensorShape {
  std::string name;
  std::vector<uint64_t> dims;  // GGUF order: dims[0] is the row length
  GgmlType keep_type;          // the type written when the tensor is not quantized (the source's type)
};

struct TypeDecision {
  GgmlType type;          // the type written
  bool quantize = false;  // false: the tensor keeps keep_type (norms, 1-D tensors, --leave-output-tensor)
  bool fallback = false;  // the row length forced a fallback type
  bool overridden = false;  // a user override chose the type
  uint64_t nbytes = 0;    // data bytes of the tensor in `type` (palettized: index and table together)
  // > 0: palettized at these bits, written as <name>.pal_idx (`type` = I8) and <name>.pal_lut (F16) with
  // palette_groups tables (formats/palette_layout.h).
  int palette_bits = 0;
  uint64_t palette_groups = 0;
};

// llama.cpp's tensor order for quantized files (llama_model_loader's weight_name_comparer): tensors outside
// blocks first, then by block number, by name within a level.
bool llama_tensor_order_less(std::string_view a, std::string_view b);

// Whether llama-quantize would quantize this tensor at all (2-D+ weights; not norms, not expert routers, ...).
bool tensor_is_quantizable(std::string_view name, const std::vector<uint64_t>& dims, bool leave_output_tensor);

// Decides the type of every tensor. The tensors must be in processing order (llama_tensor_order_less):
// the attn_v / ffn_down promotions count layers in that order. PAL types palettize every quantizable tensor
// not overridden whose rows pack into whole bytes (others fall back to F16), but output.weight (Q6_K). Throws edgeq::Error for a
// tensor whose size overflows, a regex that cannot run, or palette_group not dividing a palettized tensor's
// rows.
std::vector<TypeDecision> choose_types(const ModelParams& params, const std::vector<TensorShape>& tensors,
                                       const PolicyOptions& opts);

// Provenance of an importance matrix, recorded as llama-quantize does (quantize.imatrix.*).
struct ImatrixProvenance {
  std::string file;     // quantize.imatrix.file: the path as given
  std::string dataset;  // quantize.imatrix.dataset (omitted when empty)
  int32_t entries_count = 0;
  int32_t chunks_count = 0;
};

// The metadata of a quantized file: the source's key/values in order, without split keys and stale
// quantize.* keys, then general.quantization_version = 2 (u32) and general.file_type (u32) moved to the end
// (as llama-quantize's gguf_set_val does), then quantize.imatrix.* (file, dataset, entries_count i32,
// chunks_count i32) when an imatrix is used, then edgeq.quantize.method = method (omitted when method is
// empty: the metadata, and so the file size, are then exactly llama-quantize's). Stale edgeq.pal.* keys of
// a palettized source are dropped (quantize_model writes them for PAL outputs).
std::vector<std::pair<std::string, GgufValue>> quantized_metadata(
    const std::vector<std::pair<std::string, GgufValue>>& source, FileType ftype, const ImatrixProvenance* imatrix,
    const std::string& method);

}  // namespace edgeq::quant
