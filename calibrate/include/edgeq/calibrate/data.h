// Calibration text: plain text or JSONL (one JSON object per line with a string field "text"), either of
// them optionally zstd-compressed, read through formats/text_input.h ("-", pipes). A file is zstd when it starts with the zstd frame magic; it is JSONL
// when its name ends in ".jsonl" (or ".jsonl.zst"). JSONL records join with "\n"; several files concatenate
// in order, with a "\n" between two files when the first does not end with one.
#pragma once
#include <string>
#include <vector>

namespace edgeq::calibrate {

// Throws edgeq::Error "<file>: <problem>" for an unreadable or empty file, corrupt or truncated zstd data,
// a JSONL line that is not an object with a string "text", or a file whose text is empty.
std::string load_calibration_text(const std::vector<std::string>& files);

}  // namespace edgeq::calibrate
