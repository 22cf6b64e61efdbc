// The one reader of every text a user names (perplexity -f, tokenize -f, compare --eval / --calib,
// calibrate and quantize --data): llama.cpp users pipe text, so "-" is standard input and pipes, process
// substitutions (/dev/fd/N) and other non-seekable files are read to their end; a text that starts with the
// zstd frame magic is decompressed (whatever its name). A stream can be read only once, so what was read
// from a non-regular file is kept for later reads of the same path in this process (a command that checks
// its text before work and reads it again later gets the same bytes).
#pragma once
#include <cstddef>
#include <string>

namespace edgeq {

// Throws edgeq::Error "<path>: <problem>" when the file cannot be opened or read, is a directory, or holds
// corrupt or truncated zstd data.
std::string read_text_input(const std::string& path);

// Whether `path` names a text read_text_input can read: "-", or anything that exists and is not a directory.
bool is_text_input(const std::string& path);

// Decompresses a whole zstd stream (one or more frames). Throws edgeq::Error naming `what` when the data
// is corrupt or truncated, or would exceed max_bytes.
std::string zstd_decompress(const std::string& data, const std::string& what, size_t max_bytes = size_t(1) << 32);

// Whether data starts with the zstd frame magic.
bool is_zstd(const std::string& data);

}  // namespace edgeq
