#include "edgeq/runtime/kld.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "edgeq/base/error.h"

namespace edgeq::runtime {

namespace {

inline int nearest_int(float fval) {
  float val = fval + 12582912.f;
  int i;
  std::memcpy(&i, &val, sizeof(int));
  return (i & 0x007fffff) - 0x00400000;
}

constexpr char kMagic[8] = {'E', 'D', 'G', 'E', 'Q', 'K', 'L', 'D'};
constexpr char kLlamaMagic[8] = {'_', 'l', 'o', 'g', 'i', 't', 's', '_'};  // llama-perplexity's log-prob file

void put_u32(std::string& s, uint32_t v) { for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff)); }
void put_u64(std::string& s, uint64_t v) { for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff)); }

}  // namespace

double log_softmax_row(const float* logits, int64_t n_vocab, uint16_t* row, int32_t tok) {
  float max_logit = logits[0], min_logit = logits[0];
  for (int64_t i = 1; i < n_vocab; ++i) {
    max_logit = std::max(max_logit, logits[i]);
    min_logit = std::min(min_logit, logits[i]);
  }
  min_logit = std::max(min_logit, max_logit - 16);
  double sum_exp = 0.0;
  for (int64_t i = 0; i < n_vocab; ++i) sum_exp += std::exp(logits[i] - max_logit);
  const float log_sum_exp = static_cast<float>(std::log(sum_exp));
  const float min_log_prob = min_logit - max_logit - log_sum_exp;
  const float scale = (max_logit - min_logit) / 65535.f;
  std::memcpy(row, &scale, 4);
  std::memcpy(row + 2, &min_log_prob, 4);
  uint16_t* lp = row + 4;
  if (scale != 0.f) {
    const float inv_scale = 1 / scale;
    for (int64_t i = 0; i < n_vocab; ++i)
      lp[i] = logits[i] > min_logit ? static_cast<uint16_t>(nearest_int(inv_scale * (logits[i] - min_logit))) : 0;
  } else {
    std::memset(lp, 0, static_cast<size_t>(n_vocab) * sizeof(uint16_t));
  }
  for (int64_t i = n_vocab; i < kld_row_len(n_vocab) - 4; ++i) lp[i] = 0;  // padding
  return max_logit + log_sum_exp - logits[tok];
}

void kld_accumulate(const float* logits, int64_t n_vocab, const uint16_t* base_row, int32_t tok, KldAccum& k) {
  float max_logit = logits[0];
  int64_t imax = 0;
  for (int64_t i = 1; i < n_vocab; ++i)
    if (logits[i] > max_logit) {
      max_logit = logits[i];
      imax = i;
    }
  double sum_exp = 0.0;
  for (int64_t i = 0; i < n_vocab; ++i) sum_exp += std::exp(logits[i] - max_logit);
  const float log_sum_exp = static_cast<float>(std::log(sum_exp));
  float scale, min_log_prob;
  std::memcpy(&scale, base_row, 4);
  std::memcpy(&min_log_prob, base_row + 2, 4);
  const uint16_t* blp = base_row + 4;

  const float nll = max_logit + log_sum_exp - logits[tok];
  k.sum_nll += nll;
  k.sum_nll2 += nll * nll;
  const float nll_base = -(scale * blp[tok] + min_log_prob);
  k.sum_nll_base += nll_base;
  k.sum_nll_base2 += nll_base * nll_base;
  k.sum_nll_nll_base += nll * nll_base;

  max_logit += log_sum_exp;
  double sum = 0;
  int64_t imax_base = -1;
  float p_log_base_max = 0;
  for (int64_t i = 0; i < n_vocab; ++i) {
    const float p_log_base = scale * blp[i] + min_log_prob;
    if (i == 0 || p_log_base > p_log_base_max) {
      p_log_base_max = p_log_base;
      imax_base = i;
    }
    if (p_log_base > -16.f) {
      const float p_base = std::exp(p_log_base);
      sum += p_base * (p_log_base - logits[i] + max_logit);
    }
  }
  k.sum_kld += sum;
  k.sum_kld2 += sum * sum;
  ++k.count;
  if (imax == imax_base) ++k.n_same_top;
  const float p_base = std::exp(-nll_base);
  const float p = std::exp(-nll);
  const float p_diff = p - p_base;
  k.sum_p_diff += p_diff;
  const double p_diff2 = p_diff * p_diff;
  k.sum_p_diff2 += p_diff2;
  k.sum_p_diff4 += p_diff2 * p_diff2;
  k.max_p_diff = std::max(k.max_p_diff, std::fabs(p_diff));
  k.kld_values.push_back(static_cast<float>(sum));
  k.p_diff_values.push_back(p_diff);
}

KldStats kld_finalize(KldAccum k) {
  KldStats s;
  if (k.count < 1 || k.kld_values.empty()) fail("KL divergence: no scored tokens");
  auto mean_unc = [](double sum, double sum2, int64_t count) {
    double f = sum / count;
    double df = sum2 / count - f * f;
    df = df > 0 && count > 10 ? std::sqrt(df / (count - 1)) : 0.;
    return std::make_pair(f, df);
  };
  auto covariance = [](double a, double b, double ab, int64_t count) {
    if (count < 10) return 0.0;
    double var = ab / count - (a / count) * (b / count);
    return var / (count - 1);
  };
  auto percentile = [](const std::vector<float>& v, float fraction) {
    if (fraction <= 0) return v.front();
    if (fraction >= 1) return v.back();
    float p = fraction * static_cast<float>(v.size() - 1);
    size_t ip = static_cast<size_t>(p);
    p -= static_cast<float>(ip);
    return (1 - p) * v[ip] + p * v[std::min(ip + 1, v.size() - 1)];
  };
  std::sort(k.kld_values.begin(), k.kld_values.end());
  std::sort(k.p_diff_values.begin(), k.p_diff_values.end());
  s.count = k.count;
  auto lp = mean_unc(k.sum_nll, k.sum_nll2, k.count);
  s.ppl = std::exp(lp.first);
  s.ppl_err = s.ppl * lp.second;
  auto lb = mean_unc(k.sum_nll_base, k.sum_nll_base2, k.count);
  s.ppl_base = std::exp(lb.first);
  s.ppl_base_err = s.ppl_base * lb.second;
  const double cov = covariance(k.sum_nll, k.sum_nll_base, k.sum_nll_nll_base, k.count);
  s.cor_pct = (lp.second * lb.second) > 0 ? 100.0 * cov / (lp.second * lb.second) : 0.0;
  s.ln_ppl_ratio = lp.first - lb.first;
  s.ln_ppl_ratio_err = std::sqrt(std::max(0.0, lp.second * lp.second + lb.second * lb.second - 2.0 * cov));
  s.ppl_ratio = std::exp(s.ln_ppl_ratio);
  s.ppl_ratio_err = s.ppl_ratio * s.ln_ppl_ratio_err;

  auto kl = mean_unc(k.sum_kld, k.sum_kld2, k.count);
  s.mean_kld = kl.first;
  s.mean_kld_err = kl.second;
  const auto& kv = k.kld_values;
  s.median_kld = kv.size() % 2 == 0 ? 0.5f * (kv[kv.size() / 2] + kv[kv.size() / 2 - 1]) : kv[kv.size() / 2];
  s.max_kld = kv.back();
  s.min_kld = kv.front();
  s.p90_kld = percentile(kv, 0.900f);
  s.p95_kld = percentile(kv, 0.950f);
  s.p99_kld = percentile(kv, 0.990f);
  s.p999_kld = percentile(kv, 0.999f);

  auto pd = mean_unc(k.sum_p_diff, k.sum_p_diff2, k.count);
  s.mean_dp_pct = 100.0 * pd.first;
  s.mean_dp_err_pct = 100.0 * pd.second;
  auto mse = mean_unc(k.sum_p_diff2, k.sum_p_diff4, k.count);
  const double rms = std::sqrt(mse.first);
  s.rms_dp_pct = 100.0 * rms;
  s.rms_dp_err_pct = rms > 0 ? 100.0 * 0.5 / rms * mse.second : 0.0;
  s.max_dp_pct = 100.0 * k.max_p_diff;
  const double top = 1.0 * k.n_same_top / k.count;
  s.same_top_pct = 100.0 * top;
  s.same_top_err_pct = k.count > 1 ? 100.0 * std::sqrt(top * (1.0 - top) / (k.count - 1)) : 0.0;
  return s;
}

bool exists_and_not_kld_base(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  char head[sizeof(kMagic)] = {};
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return true;  // unreadable: certainly not ours to replace
  const ssize_t n = ::read(fd, head, sizeof(head));
  ::close(fd);
  return n != static_cast<ssize_t>(sizeof(head)) ||
         (std::memcmp(head, kMagic, sizeof(kMagic)) != 0 && std::memcmp(head, kLlamaMagic, sizeof(kLlamaMagic)) != 0);
}

// ---------------------------------------------------------------- base file writer

struct KldBaseWriter::Impl {
  std::unique_ptr<AtomicOutputFile> out;
  ZSTD_CCtx* cctx = nullptr;  // null for the (uncompressed) Llama layout
  std::vector<char> buf;
  ~Impl() {
    if (cctx) ZSTD_freeCCtx(cctx);
  }
  void pump(const void* src, size_t n, ZSTD_EndDirective mode) {
    ZSTD_inBuffer in{src, n, 0};
    for (;;) {
      ZSTD_outBuffer o{buf.data(), buf.size(), 0};
      const size_t rem = ZSTD_compressStream2(cctx, &o, &in, mode);
      if (ZSTD_isError(rem)) fail("{}: zstd compression failed: {}", out->path(), ZSTD_getErrorName(rem));
      if (o.pos) out->write(buf.data(), o.pos);
      if (mode == ZSTD_e_end ? rem == 0 : in.pos == in.size) break;
    }
  }
};

KldBaseWriter::KldBaseWriter(const std::string& path, const KldHeader& h) : impl_(std::make_unique<Impl>()) {
  impl_->out = std::make_unique<AtomicOutputFile>(path);
  if (h.format == KldBaseFormat::Llama) {
    if (h.tokens.size() != static_cast<uint64_t>(h.n_chunks) * h.n_ctx || h.n_ctx > INT32_MAX || h.n_vocab > INT32_MAX ||
        h.n_chunks > INT32_MAX)
      fail("{}: llama.cpp KLD base header needs n_chunks x n_ctx token ids", path);
    std::string hdr(kLlamaMagic, 8);
    put_u32(hdr, h.n_ctx);
    put_u32(hdr, h.n_vocab);
    put_u32(hdr, h.n_chunks);
    for (int32_t t : h.tokens) put_u32(hdr, static_cast<uint32_t>(t));
    impl_->out->write(hdr.data(), hdr.size());
    return;
  }
  std::string hdr(kMagic, 8);
  put_u32(hdr, h.version);
  put_u32(hdr, h.n_ctx);
  put_u32(hdr, h.n_vocab);
  put_u32(hdr, h.n_chunks);
  put_u32(hdr, h.add_bos);
  put_u64(hdr, h.tokens_hash);
  put_u32(hdr, static_cast<uint32_t>(h.model_name.size()));
  hdr += h.model_name;
  put_u32(hdr, static_cast<uint32_t>(h.model_path.size()));
  hdr += h.model_path;
  impl_->out->write(hdr.data(), hdr.size());
  impl_->cctx = ZSTD_createCCtx();
  if (!impl_->cctx) fail("{}: cannot create a zstd context", path);
  ZSTD_CCtx_setParameter(impl_->cctx, ZSTD_c_compressionLevel, 3);
  ZSTD_CCtx_setParameter(impl_->cctx, ZSTD_c_checksumFlag, 1);
  impl_->buf.resize(ZSTD_CStreamOutSize());
}

KldBaseWriter::~KldBaseWriter() = default;

void KldBaseWriter::write(const uint16_t* data, size_t n) {
  // The rows are little-endian uint16 in both layouts (x86-64 and every target edgeq builds for).
  if (impl_->cctx)
    impl_->pump(data, n * sizeof(uint16_t), ZSTD_e_continue);
  else
    impl_->out->write(data, n * sizeof(uint16_t));
}

void KldBaseWriter::finish() {
  if (impl_->cctx) impl_->pump(nullptr, 0, ZSTD_e_end);
  impl_->out->commit();
}

// ---------------------------------------------------------------- base file reader

namespace {

void check_sizes(const std::string& path, const KldHeader& h) {
  if (h.n_ctx < 4 || h.n_ctx > (1u << 20)) fail("{}: KLD base n_ctx {} is out of range", path, h.n_ctx);
  if (h.n_vocab < 1 || h.n_vocab > (1u << 24)) fail("{}: KLD base n_vocab {} is out of range", path, h.n_vocab);
  if (h.n_chunks < 1 || h.n_chunks > (1u << 24)) fail("{}: KLD base n_chunks {} is out of range", path, h.n_chunks);
}

}  // namespace

struct KldBaseReader::Impl {
  std::string path;
  MappedFile map;
  KldHeader h;
  ZSTD_DCtx* dctx = nullptr;  // null for the (uncompressed) Llama layout
  ZSTD_inBuffer in{nullptr, 0, 0};  // Llama layout: the raw rows, consumed by pos
  bool frame_done = false;
  ~Impl() {
    if (dctx) ZSTD_freeDCtx(dctx);
  }
};

KldBaseReader::KldBaseReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  Impl& I = *impl_;
  I.path = path;
  I.map = MappedFile(path);
  const uint8_t* p = I.map.data();
  const uint64_t size = I.map.size();
  uint64_t off = 0;
  auto need = [&](uint64_t n) {
    if (n > size || off > size - n) fail("{}: truncated KLD base header", path);
  };
  auto little_endian = [&]<class T>(T v) {  // reads a T from off (v: 0)
    need(sizeof(T));
    for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(p[off + i]) << (8 * i);
    off += sizeof(T);
    return v;
  };
  auto u32 = [&] { return little_endian(uint32_t{0}); };
  auto u64 = [&] { return little_endian(uint64_t{0}); };
  auto str = [&] {
    const uint32_t n = u32();
    if (n > 65536) fail("{}: KLD base header string of {} bytes is too long", path, n);
    need(n);
    std::string s(reinterpret_cast<const char*>(p + off), n);
    off += n;
    return s;
  };
  need(8);
  if (std::memcmp(p, kLlamaMagic, 8) == 0) {
    off = 8;
    I.h.format = KldBaseFormat::Llama;
    I.h.version = 0;
    I.h.n_ctx = u32();
    I.h.n_vocab = u32();
    I.h.n_chunks = u32();
    check_sizes(path, I.h);
    // The file is exactly header + tokens + rows (llama-perplexity writes nothing else); ranges above keep the
    // products below 2^63.
    const uint64_t n_tok = uint64_t{I.h.n_chunks} * I.h.n_ctx;
    const uint64_t n_rows = uint64_t{I.h.n_chunks} * (I.h.n_ctx - 1 - I.h.n_ctx / 2);
    const uint64_t row_bytes = static_cast<uint64_t>(kld_row_len(I.h.n_vocab)) * sizeof(uint16_t);
    if (n_rows > (uint64_t{1} << 62) / row_bytes) fail("{}: llama.cpp KLD base announces an impossible size", path);
    const uint64_t want = off + 4 * n_tok + n_rows * row_bytes;
    if (size != want)
      fail("{}: llama.cpp KLD base is {} bytes, its header (n_ctx {}, n_vocab {}, n_chunk {}) announces {}{}", path, size,
           I.h.n_ctx, I.h.n_vocab, I.h.n_chunks, want, size < want ? " (truncated file?)" : "");
    I.h.tokens.resize(n_tok);
    for (uint64_t i = 0; i < n_tok; ++i) {
      const int32_t t = static_cast<int32_t>(u32());
      if (t < 0 || static_cast<uint32_t>(t) >= I.h.n_vocab)
        fail("{}: llama.cpp KLD base token {} at position {} is outside its vocabulary of {}", path, t, i, I.h.n_vocab);
      I.h.tokens[i] = t;
    }
    I.h.tokens_hash = hash_tokens(I.h.tokens.data(), I.h.tokens.size());
    I.in = ZSTD_inBuffer{p + off, static_cast<size_t>(size - off), 0};
    return;
  }
  if (std::memcmp(p, kMagic, 8) != 0)
    fail("{}: not a KLD base file (neither edgeq's nor llama-perplexity --kl-divergence-base's magic)", path);
  off = 8;
  I.h.version = u32();
  if (I.h.version != 1) fail("{}: unsupported KLD base file version {}", path, I.h.version);
  I.h.n_ctx = u32();
  I.h.n_vocab = u32();
  I.h.n_chunks = u32();
  I.h.add_bos = u32();
  I.h.tokens_hash = u64();
  I.h.model_name = str();
  I.h.model_path = str();
  check_sizes(path, I.h);
  if (I.h.add_bos > 1) fail("{}: KLD base add_bos {} is invalid", path, I.h.add_bos);
  I.dctx = ZSTD_createDCtx();
  if (!I.dctx) fail("{}: cannot create a zstd context", path);
  I.in = ZSTD_inBuffer{p + off, static_cast<size_t>(size - off), 0};
}

KldBaseReader::~KldBaseReader() = default;

const KldHeader& KldBaseReader::header() const { return impl_->h; }

void KldBaseReader::read(uint16_t* dst, size_t n) {
  Impl& I = *impl_;
  if (!I.dctx) {
    if (n > (I.in.size - I.in.pos) / sizeof(uint16_t)) fail("{}: KLD base data ends early (truncated file?)", I.path);
    std::memcpy(dst, static_cast<const uint8_t*>(I.in.src) + I.in.pos, n * sizeof(uint16_t));
    I.in.pos += n * sizeof(uint16_t);
    return;
  }
  ZSTD_outBuffer o{dst, n * sizeof(uint16_t), 0};
  while (o.pos < o.size) {
    if (I.frame_done || I.in.pos >= I.in.size) fail("{}: KLD base data ends early (truncated file?)", I.path);
    const size_t r = ZSTD_decompressStream(I.dctx, &o, &I.in);
    if (ZSTD_isError(r)) fail("{}: corrupt KLD base data: {}", I.path, ZSTD_getErrorName(r));
    if (r == 0) I.frame_done = true;
    if (r != 0 && o.pos < o.size && I.in.pos >= I.in.size) fail("{}: KLD base data ends early (truncated file?)", I.path);
  }
}

void KldBaseReader::finish() {
  Impl& I = *impl_;
  while (I.dctx && !I.frame_done) {
    uint8_t extra = 0;
    ZSTD_outBuffer o{&extra, 1, 0};
    if (I.in.pos >= I.in.size) fail("{}: KLD base data ends early (truncated file?)", I.path);
    const size_t r = ZSTD_decompressStream(I.dctx, &o, &I.in);
    if (ZSTD_isError(r)) fail("{}: corrupt KLD base data: {}", I.path, ZSTD_getErrorName(r));
    if (o.pos) fail("{}: KLD base holds more data than its header announces", I.path);
    if (r == 0) I.frame_done = true;
  }
  if (I.in.pos != I.in.size) fail("{}: trailing bytes after the KLD base data", I.path);
}

}  // namespace edgeq::runtime
