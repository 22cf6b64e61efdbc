#include "edgeq/formats/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <utility>
#include <vector>

#include "edgeq/base/error.h"

namespace edgeq {

static const char* non_regular_kind(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISDIR(mode)) return "a directory";
  return "a special file";
}

void require_regular_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail("{}: cannot open: {}", path, std::strerror(errno));
  if (S_ISDIR(st.st_mode)) fail("{}: is a directory, expected a file", path);
  if (!S_ISREG(st.st_mode))
    fail("{}: is {}, not a regular file; refusing to read it", path, non_regular_kind(st.st_mode));
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below like every non-regular file.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail("{}: cannot stat: {}", path, std::strerror(e));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail("{}: is a directory, expected a file", path);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: is {}, not a regular file; refusing to read it", path, non_regular_kind(st.st_mode));
  }
  note_input_file(path);
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail("{}: cannot map: {}", path, std::strerror(e));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

void MappedFile::populate() const {
#ifdef MADV_POPULATE_READ
  if (data_) (void)::madvise(const_cast<uint8_t*>(data_), size_, MADV_POPULATE_READ);
#endif
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

MappedFile::MappedFile(MappedFile&& o) noexcept
    : path_(std::move(o.path_)), data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
    path_ = std::move(o.path_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

std::string read_text_file(const std::string& path) {
  MappedFile m(path);
  return std::string(reinterpret_cast<const char*>(m.data()), m.size());
}

// --- inputs this process read ------------------------------------------------------------------

namespace {

struct InputFile {
  std::string path;
  dev_t dev;
  ino_t ino;
};

std::mutex g_inputs_mu;
std::vector<InputFile> g_inputs;
std::atomic<bool> g_protect_inputs{false};

bool same_inode(const std::string& path, dev_t dev, ino_t ino) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

}  // namespace

void note_input_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode)) return;
  std::lock_guard<std::mutex> lock(g_inputs_mu);
  for (auto& f : g_inputs)
    if (f.dev == st.st_dev && f.ino == st.st_ino && f.path == path) return;
  g_inputs.push_back({path, st.st_dev, st.st_ino});
}

void protect_inputs(bool on) { g_protect_inputs.store(on); }

void forget_input_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return;
  std::lock_guard<std::mutex> lock(g_inputs_mu);
  std::erase_if(g_inputs, [&](const InputFile& f) { return f.dev == st.st_dev && f.ino == st.st_ino; });
}

void check_output_path(const std::string& path) {
  if (path.empty()) fail("output path is empty");
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return;  // a new file (or a dangling link): nothing to lose
    fail("{}: cannot access output: {}", path, std::strerror(errno));
  }
  if (S_ISDIR(st.st_mode)) fail("{}: is a directory, expected an output file path", path);
  if (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode)) return;  // written in place
  if (!S_ISREG(st.st_mode)) fail("{}: is not a regular file, a character device or a FIFO; refusing to write to it", path);
  if (!g_protect_inputs.load()) return;
  std::lock_guard<std::mutex> lock(g_inputs_mu);
  for (auto& f : g_inputs)
    if (f.dev == st.st_dev && f.ino == st.st_ino && same_inode(f.path, f.dev, f.ino))
      fail("{}: is an input of this command ({}); refusing to overwrite it", path, f.path);
}

// --- cleanup on SIGINT/SIGTERM --------------------------------------------------------------------

namespace {

constexpr int kSignalSlots = 4096 + 64;  // a split GGUF's files (kMaxSplitFiles) and a few more
std::atomic<char*> g_remove_slots[kSignalSlots];

extern "C" void edgeq_signal_cleanup(int sig) {
  for (auto& slot : g_remove_slots) {
    char* p = slot.load();
    if (p) ::unlink(p);
  }
  static const char msg[] = "\nedgeq: interrupted; unfinished output removed\n";
  ssize_t ignored = ::write(2, msg, sizeof(msg) - 1);
  (void)ignored;
  ::_exit(128 + sig);
}

}  // namespace

void install_signal_cleanup() {
  struct sigaction sa {};
  sa.sa_handler = edgeq_signal_cleanup;
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGINT);
  sigaddset(&sa.sa_mask, SIGTERM);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

ScopedRemoveOnSignal::ScopedRemoveOnSignal(const std::string& path) : path_(::strdup(path.c_str())) {
  if (!path_) throw std::bad_alloc();
  for (int i = 0; i < kSignalSlots; ++i) {
    char* expected = nullptr;
    if (g_remove_slots[i].compare_exchange_strong(expected, path_)) {
      slot_ = i;
      return;
    }
  }
  std::free(path_);
  path_ = nullptr;
  fail("{}: too many outputs open at once", path);
}

ScopedRemoveOnSignal::~ScopedRemoveOnSignal() {
  if (slot_ >= 0) g_remove_slots[slot_].store(nullptr);
  std::free(path_);
}

// --- atomic output ---------------------------------------------------------------------------------

static constexpr size_t kBufSize = 1 << 20;

namespace {

// Removes "<target>.tmp.<pid>" files left by processes that no longer exist (SIGKILL, power loss): a later
// run into the same output cleans up after them. Files of live processes (a parallel run) stay.
void remove_stale_temp_files(const std::string& target) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path t(target);
  const fs::path dir = t.has_parent_path() ? t.parent_path() : fs::path(".");
  const std::string prefix = t.filename().string() + ".tmp.";
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const long pid = std::stol(digits);
    if (pid <= 0 || pid == ::getpid()) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to know)
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) ::unlink(it->path().c_str());
  }
}

}  // namespace

AtomicOutputFile::AtomicOutputFile(const std::string& path) : path_(path), target_(path) {
  check_output_path(path);
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode))) {
    direct_ = true;
    fd_ = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd_ < 0) fail("{}: cannot open output: {}", path, std::strerror(errno));
    buf_.reserve(kBufSize);
    return;
  }
  // Follow a symbolic link: the link stays, its target is replaced.
  struct stat lst {};
  if (::lstat(path.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode)) {
    if (char* real = ::realpath(path.c_str(), nullptr)) {
      target_ = real;
      std::free(real);
    }
  }
  remove_stale_temp_files(target_);
  tmp_path_ = target_ + ".tmp." + std::to_string(::getpid());
  on_signal_ = std::make_unique<ScopedRemoveOnSignal>(tmp_path_);
  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0 && errno == EEXIST) {  // a stale temp file of a killed process with our pid
    ::unlink(tmp_path_.c_str());
    fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  }
  if (fd_ < 0) fail("{}: cannot create output: {}", path, std::strerror(errno));
  buf_.reserve(kBufSize);
}

AtomicOutputFile::~AtomicOutputFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!direct_ && !committed_) ::unlink(tmp_path_.c_str());
}

void AtomicOutputFile::flush_buf() {
  const char* p = buf_.data();
  size_t left = buf_.size();
  while (left > 0) {
    ssize_t w = ::write(fd_, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("{}: write failed: {}", path_, std::strerror(errno));
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
  buf_.clear();
}

void AtomicOutputFile::write(const void* data, size_t n) {
  if (fd_ < 0) fail("{}: write after close", path_);
  const char* p = static_cast<const char*>(data);
  offset_ += n;
  if (buf_.size() + n <= kBufSize) {
    buf_.append(p, n);
    return;
  }
  flush_buf();
  if (n >= kBufSize) {
    buf_.assign(p, n);
    flush_buf();
    buf_.reserve(kBufSize);
  } else {
    buf_.append(p, n);
  }
}

void AtomicOutputFile::write_zeros(size_t n) {
  static const char zeros[256] = {};
  while (n > 0) {
    size_t k = n < sizeof(zeros) ? n : sizeof(zeros);
    write(zeros, k);
    n -= k;
  }
}

void AtomicOutputFile::close() {
  if (committed_) fail("{}: close after commit", path_);
  if (fd_ < 0) return;
  flush_buf();
  if (direct_) {
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) fail("{}: close failed: {}", path_, std::strerror(errno));
    return;
  }
  if (::fsync(fd_) != 0 && errno != EINVAL) fail("{}: fsync failed: {}", path_, std::strerror(errno));
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) fail("{}: close failed: {}", path_, std::strerror(errno));
}

void AtomicOutputFile::commit() {
  if (committed_) fail("{}: commit twice", path_);
  close();
  committed_ = true;
  if (direct_) return;
  try {
    check_output_path(path_);  // an input opened after this output was created
  } catch (...) {
    ::unlink(tmp_path_.c_str());
    throw;
  }
  if (::rename(tmp_path_.c_str(), target_.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp_path_.c_str());
    fail("{}: cannot rename temp file into place: {}", path_, std::strerror(e));
  }
}

}  // namespace edgeq
