// Read-only memory map of a whole file. Readers hand out spans into it and never copy.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace edgeq {

class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path);  // throws edgeq::Error naming the path
  ~MappedFile();
  MappedFile(MappedFile&&) noexcept;
  MappedFile& operator=(MappedFile&&) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// Reads a whole (text) file; throws edgeq::Error naming the path when it cannot be opened or read.
std::string read_text_file(const std::string& path);

// Writes a file atomically: everything goes to "<path>.tmp.<pid>" and is renamed onto <path> by commit().
// If the object is destroyed without commit() (error, exception), the temp file is removed:
// a failed run never leaves a partial output behind.
class AtomicOutputFile {
 public:
  explicit AtomicOutputFile(const std::string& path);  // throws edgeq::Error
  ~AtomicOutputFile();
  AtomicOutputFile(const AtomicOutputFile&) = delete;
  AtomicOutputFile& operator=(const AtomicOutputFile&) = delete;

  void write(const void* data, size_t n);  // throws on short write (disk full…)
  void write_zeros(size_t n);
  uint64_t offset() const { return offset_; }
  void commit();  // flush, fsync, close, rename
  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_path_;
  int fd_ = -1;
  uint64_t offset_ = 0;
  std::string buf_;
  void flush_buf();
};

}  // namespace edgeq
