// Reader for llama.cpp's legacy binary importance-matrix files (llama-imatrix, b4748 format):
//   int32 n_entries; per entry: int32 name_len, name bytes, int32 ncall, int32 nval, float values[nval];
//   then optionally int32 last_call, int32 dataset_len, dataset bytes.
// The stored values are per-column sums over ncall calls (mean * ncall); like llama-quantize's load_imatrix,
// importance() returns them divided by ncall (when ncall > 0): the per-column mean of x^2, the vector
// llama-quantize hands to the quantizer for every row of that weight.
// open() also reads the GGUF imatrix of current llama.cpp (general.type = imatrix, <tensor>.in_sum2 and
// <tensor>.counts per weight; importance = in_sum2 / counts; other tensors are ignored, as llama.cpp does).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace edgeq {
class GgufFile;
}

namespace edgeq::quant {

struct ImatrixEntry {
  std::string name;          // GGUF tensor name, e.g. "blk.0.attn_q.weight"
  int32_t ncall = 0;         // number of calls accumulated
  std::vector<float> values; // importance per column (already divided by ncall), nval = row length
};

class ImatrixFile {
 public:
  // Throws edgeq::Error("<path>: ...") on anything malformed (hostile input safe).
  static ImatrixFile open(const std::string& path);
  static ImatrixFile parse(const uint8_t* data, uint64_t size, const std::string& name);
  static ImatrixFile from_gguf(const GgufFile& f);

  const std::string& path() const { return path_; }
  const std::vector<ImatrixEntry>& entries() const { return entries_; }
  const ImatrixEntry* find(std::string_view tensor_name) const;
  // The per-column importance for a tensor, or nullptr when the file has no entry for it.
  const std::vector<float>* importance(std::string_view tensor_name) const;
  // Name -> importance, as llama-quantize's imatrix_data map.
  std::map<std::string, std::vector<float>, std::less<>> to_map() const;

  int32_t last_call() const { return last_call_; }   // chunks processed (0 when absent)
  const std::string& dataset() const { return dataset_; }  // calibration file name ("" when absent)

 private:
  std::string path_;
  std::vector<ImatrixEntry> entries_;
  std::map<std::string, size_t, std::less<>> index_;
  int32_t last_call_ = 0;
  std::string dataset_;
};

}  // namespace edgeq::quant
