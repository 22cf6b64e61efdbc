// Read-only memory map of a whole file. Readers hand out spans into it and never copy.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
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
  // Maps every page up front (madvise MADV_POPULATE_READ, as llama.cpp's MAP_POPULATE): one call instead of
  // a page fault per few pages while a model's weights are first read. Best effort: a kernel without it
  // (before Linux 5.14) or a failure leaves the lazy mapping, which works the same.
  void populate() const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// Reads a whole (text) file; throws edgeq::Error naming the path when it cannot be opened or read.
std::string read_text_file(const std::string& path);

// Throws edgeq::Error naming `path` unless it is a regular file (through links): "no such file or
// directory", or the same "is a FIFO (named pipe), not a regular file" MappedFile gives. For inputs
// checked before they are opened (a sweep's source and imatrix hashes, --merge's result files).
void require_regular_file(const std::string& path);

// --- Never lose a user's file ------------------------------------------------------------------
// Every file the process reads through MappedFile (and so read_text_file) is remembered by device and
// inode; once protect_inputs() is on (the edgeq program turns it on in main: one process = one command),
// no output may replace one of them, whatever path (link, relative path, hard link) names it. Library
// users that deliberately rewrite files they read (tests, a long-lived process) leave it off.
// An entry counts only while its path still names the same inode, so a deleted input's reused inode
// number never blocks a new output.
void note_input_file(const std::string& path);
void protect_inputs(bool on);
// Stops protecting `path` (a command that deliberately rewrites its own earlier output, e.g. a report).
void forget_input_file(const std::string& path);
// Throws edgeq::Error naming `path` when an output there would replace a file this process read, a
// directory, or anything but a regular file, a character device or a FIFO. AtomicOutputFile calls it when
// created and again before it renames; commands call it early to refuse before any work starts.
void check_output_path(const std::string& path);

// SIGINT/SIGTERM: remove every temp file of an unfinished AtomicOutputFile (and every path registered
// with ScopedRemoveOnSignal), then exit 130/143. Called once by the program's main.
void install_signal_cleanup();

// Registers a path to unlink if SIGINT/SIGTERM arrives while the object lives (async-signal-safe slots).
class ScopedRemoveOnSignal {
 public:
  explicit ScopedRemoveOnSignal(const std::string& path);
  ~ScopedRemoveOnSignal();
  ScopedRemoveOnSignal(const ScopedRemoveOnSignal&) = delete;
  ScopedRemoveOnSignal& operator=(const ScopedRemoveOnSignal&) = delete;

 private:
  int slot_ = -1;
  char* path_ = nullptr;
};

// Writes a file atomically: everything goes to "<path>.tmp.<pid>" and is renamed onto <path> by commit().
// If the object is destroyed without commit() (error, exception), the temp file is removed:
// a failed run never leaves a partial output behind. A symbolic link is followed (the link stays, its
// target is replaced). A character device or FIFO (/dev/null, a pipe) is written directly, never
// renamed over. Refuses outputs that check_output_path() refuses. Creating one removes the
// "<path>.tmp.<pid>" files of processes that no longer exist (a run killed by SIGKILL).
class AtomicOutputFile {
 public:
  explicit AtomicOutputFile(const std::string& path);  // throws edgeq::Error
  ~AtomicOutputFile();
  AtomicOutputFile(const AtomicOutputFile&) = delete;
  AtomicOutputFile& operator=(const AtomicOutputFile&) = delete;

  void write(const void* data, size_t n);  // throws on short write (disk full…)
  void write_zeros(size_t n);
  uint64_t offset() const { return offset_; }
  // Flush, fsync and close the temp file, which stays a temp file (removed if never committed): a set of
  // files (a split GGUF) closes each as it is complete and commits all at the end.
  void close();
  void commit();  // close() if still open, then rename
  const std::string& path() const { return path_; }
  const std::string& target() const { return target_; }  // the file that commit() replaced (links resolved)

 private:
  std::string path_, target_, tmp_path_;
  std::unique_ptr<ScopedRemoveOnSignal> on_signal_;
  bool direct_ = false;  // a character device or FIFO: written in place
  bool committed_ = false;
  int fd_ = -1;
  uint64_t offset_ = 0;
  std::string buf_;
  void flush_buf();
};

}  // namespace edgeq
