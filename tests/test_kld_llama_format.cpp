// KLD base files in llama-perplexity's layout (--kl-divergence-base, b4748): "_logits_", int32 n_ctx, n_vocab,
// n_chunk, the n_chunk·n_ctx token ids, then per chunk (n_ctx−1−n_ctx/2) rows of 2·((n_vocab+1)/2)+4 uint16,
// uncompressed. edgeq reads them (so a base made by llama.cpp can be used with --kld) and writes them on request.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/runtime/kld.h"
#include "edgeq/runtime/model.h"
#include "edgeq/runtime/perplexity.h"
#include "golden_check.h"
#include "test_helpers.h"

namespace rt = edgeq::runtime;
using edgeq::test::shared;

namespace {

using edgeq::golden::heldout_tokens;

void put_i32(std::vector<uint8_t>& b, int32_t v) {
  uint8_t x[4];
  std::memcpy(x, &v, 4);
  b.insert(b.end(), x, x + 4);
}
void put_u16(std::vector<uint8_t>& b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v & 0xff));
  b.push_back(static_cast<uint8_t>(v >> 8));
}
void put_f32(std::vector<uint8_t>& b, float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  put_i32(b, static_cast<int32_t>(u));
}

// A small llama-perplexity base built byte by byte: n_ctx 8 (first 4, 3 scored rows per chunk), n_vocab 5 (odd:
// one uint16 of padding, nv = 10), 2 chunks. Row r of chunk c: scale 0.25·(c+1), min log-prob −(r+1), levels
// 100·c + 10·r + i.
std::vector<uint8_t> hand_built(int32_t n_ctx = 8, int32_t n_vocab = 5, int32_t n_chunk = 2) {
  std::vector<uint8_t> b{'_', 'l', 'o', 'g', 'i', 't', 's', '_'};
  put_i32(b, n_ctx);
  put_i32(b, n_vocab);
  put_i32(b, n_chunk);
  for (int32_t i = 0; i < n_chunk * n_ctx; ++i) put_i32(b, n_vocab > 0 ? (i * 3 + 1) % n_vocab : 0);
  const int32_t n_scored = n_ctx - 1 - n_ctx / 2;
  for (int32_t c = 0; c < n_chunk; ++c)
    for (int32_t r = 0; r < n_scored; ++r) {
      put_f32(b, 0.25f * static_cast<float>(c + 1));
      put_f32(b, -static_cast<float>(r + 1));
      for (int32_t i = 0; i < n_vocab; ++i) put_u16(b, static_cast<uint16_t>(100 * c + 10 * r + i));
      for (int32_t i = n_vocab; i < 2 * ((n_vocab + 1) / 2); ++i) put_u16(b, 0);
    }
  return b;
}

std::vector<uint16_t> read_all(const std::string& path, size_t n) {
  rt::KldBaseReader rd(path);
  std::vector<uint16_t> v(n);
  rd.read(v.data(), n);
  rd.finish();
  return v;
}

}  // namespace

TEST(KldLlamaFormat, ReadsHandBuiltFile) {
  edgeq::test::TempDir tmp;
  const std::string path = tmp.file("hand.kld");
  edgeq::test::write_file(path, hand_built());
  rt::KldBaseReader rd(path);
  const rt::KldHeader& h = rd.header();
  EXPECT_EQ(h.format, rt::KldBaseFormat::Llama);
  EXPECT_EQ(h.n_ctx, 8u);
  EXPECT_EQ(h.n_vocab, 5u);
  EXPECT_EQ(h.n_chunks, 2u);
  ASSERT_EQ(h.tokens.size(), 16u);
  for (int32_t i = 0; i < 16; ++i) EXPECT_EQ(h.tokens[i], (i * 3 + 1) % 5);
  EXPECT_EQ(h.tokens_hash, rt::hash_tokens(h.tokens.data(), h.tokens.size()));
  ASSERT_EQ(rt::kld_row_len(5), 10);
  for (int c = 0; c < 2; ++c) {
    std::vector<uint16_t> rows(3 * 10);
    rd.read(rows.data(), rows.size());
    for (int r = 0; r < 3; ++r) {
      const uint16_t* row = rows.data() + r * 10;
      float scale, min_lp;
      std::memcpy(&scale, row, 4);
      std::memcpy(&min_lp, row + 2, 4);
      EXPECT_EQ(scale, 0.25f * static_cast<float>(c + 1));
      EXPECT_EQ(min_lp, -static_cast<float>(r + 1));
      for (int i = 0; i < 5; ++i) EXPECT_EQ(row[4 + i], 100 * c + 10 * r + i);
    }
  }
  rd.finish();
}

TEST(KldLlamaFormat, MalformedFilesGiveOneClearError) {
  edgeq::test::TempDir tmp;
  const std::string path = tmp.file("bad.kld");
  const auto good = hand_built();
  auto expect_error = [&](const std::vector<uint8_t>& bytes, const std::string& what) {
    edgeq::test::write_file(path, bytes);
    try {
      auto v = read_all(path, 2 * 3 * 10);
      ADD_FAILURE() << what << ": accepted";
    } catch (const edgeq::Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind(path + ":", 0), 0u) << what << ": " << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << what << ": " << msg;
    }
  };
  for (size_t cut : {size_t(4), size_t(8), size_t(15), size_t(20), size_t(60), good.size() - 1})
    expect_error(std::vector<uint8_t>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut)),
                 "cut at " + std::to_string(cut));
  auto longer = good;
  longer.push_back(0);
  expect_error(longer, "one trailing byte");
  expect_error(hand_built(2), "n_ctx 2");
  expect_error(hand_built(8, 0), "n_vocab 0");
  expect_error(hand_built(8, 5, 0), "n_chunk 0");
  auto huge = good;  // n_chunk 2^24: the announced size does not fit the file
  huge[16] = 0, huge[17] = 0, huge[18] = 0, huge[19] = 1;
  expect_error(huge, "n_chunk 2^24");
  auto neg = good;  // n_vocab -1
  std::memset(neg.data() + 12, 0xff, 4);
  expect_error(neg, "n_vocab -1");
  auto tok = good;  // token id 5 of a vocabulary of 5
  tok[20] = 5;
  expect_error(tok, "token outside the vocabulary");
  auto magic = good;
  magic[0] = 'X';
  expect_error(magic, "bad magic");
}

// edgeq writes the llama layout on request: exactly header + tokens + rows, the rows identical to those of
// edgeq's own (compressed) layout; reading either back gives identical KLD statistics.
TEST(KldLlamaFormat, WriteReadRoundTripEqualsEdgeqLayout) {
  const auto& toks = heldout_tokens("stories260K-F32.gguf");
  ASSERT_GT(toks.size(), 1000u);
  auto m = rt::Model::load(shared("golden/stories260K-F32.gguf"));
  edgeq::test::TempDir tmp;
  rt::PerplexityOptions o;
  o.n_ctx = 128;
  o.max_chunks = 3;
  o.n_threads = 2;
  o.kld_base_out = tmp.file("base.llama");
  o.kld_base_format = rt::KldBaseFormat::Llama;
  const auto ra = rt::perplexity(m, toks, true, 1, o);
  o.kld_base_out = tmp.file("base.edgeq");
  o.kld_base_format = rt::KldBaseFormat::Edgeq;
  const auto rb = rt::perplexity(m, toks, true, 1, o);
  EXPECT_EQ(ra.ppl, rb.ppl);

  // The exact byte layout llama-perplexity writes.
  const auto bytes = edgeq::test::read_file(tmp.file("base.llama"));
  const int64_t nv = rt::kld_row_len(512), n_scored = 128 - 1 - 64;
  ASSERT_EQ(bytes.size(), static_cast<size_t>(8 + 12 + 4 * 3 * 128 + 2 * 3 * n_scored * nv));
  EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + 8), "_logits_");
  int32_t hdr[3];
  std::memcpy(hdr, bytes.data() + 8, 12);
  EXPECT_EQ(hdr[0], 128);
  EXPECT_EQ(hdr[1], 512);
  EXPECT_EQ(hdr[2], 3);
  std::vector<int32_t> stored(3 * 128);
  std::memcpy(stored.data(), bytes.data() + 20, stored.size() * 4);
  EXPECT_EQ(stored, std::vector<int32_t>(toks.begin(), toks.begin() + 3 * 128));  // BOS not substituted

  rt::KldBaseReader la(tmp.file("base.llama")), ed(tmp.file("base.edgeq"));
  EXPECT_EQ(la.header().format, rt::KldBaseFormat::Llama);
  EXPECT_EQ(ed.header().format, rt::KldBaseFormat::Edgeq);
  EXPECT_EQ(la.header().tokens_hash, ed.header().tokens_hash);
  std::vector<uint16_t> a(static_cast<size_t>(3 * n_scored * nv)), b(a.size());
  la.read(a.data(), a.size());
  ed.read(b.data(), b.size());
  EXPECT_EQ(a, b);
  la.finish();
  ed.finish();

  // A quantized-like candidate: the model in plain f32 arithmetic against both bases.
  o.kld_base_out.clear();
  o.ggml_compat = false;
  o.kld_in = tmp.file("base.llama");
  const auto ka = rt::perplexity(m, toks, true, 1, o);
  o.kld_in = tmp.file("base.edgeq");
  const auto kb = rt::perplexity(m, toks, true, 1, o);
  ASSERT_TRUE(ka.kld && kb.kld);
  // The two arithmetics differ by f16 roundings only: the mean KLD is at the 16-bit base rows' resolution (its
  // sign is noise: +9.0e-7 with OpenBLAS's sgemm, -1.5e-6 with the runtime's GEMM), the tail is not (p99 3.4e-5).
  EXPECT_NE(ka.kld->mean_kld, 0.0);
  EXPECT_GT(ka.kld->p99_kld, 0.0);
  EXPECT_EQ(ka.kld->mean_kld, kb.kld->mean_kld);
  EXPECT_EQ(ka.kld->p99_kld, kb.kld->p99_kld);
  EXPECT_EQ(ka.kld->same_top_pct, kb.kld->same_top_pct);
  EXPECT_EQ(ka.kld->ppl_base, kb.kld->ppl_base);
  EXPECT_EQ(ka.kld->base_model, tmp.file("base.llama"));  // the layout names no model

  // Other tokens: refused, naming the first differing position.
  std::vector<int32_t> other = toks;
  other[200] = (other[200] + 1) % 512;
  o.kld_in = tmp.file("base.llama");
  try {
    rt::perplexity(m, other, true, 1, o);
    ADD_FAILURE() << "other tokens accepted";
  } catch (const edgeq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("position 200"), std::string::npos) << e.what();
  }
  o.n_ctx = 64;
  EXPECT_THROW(rt::perplexity(m, toks, true, 1, o), edgeq::Error);
}

// The CLI: --kld-base-format llama writes the llama layout, --kld reads it.
TEST(KldLlamaFormat, Cli) {
  const std::string bin = std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq";
  if (!std::filesystem::exists(bin)) GTEST_SKIP() << "edgeq binary not built";
  edgeq::test::TempDir tmp;
  const std::string model = shared("golden/stories260K-F32.gguf"), text = shared("text/tinystories-heldout.txt");
  auto sh = [&](const std::string& args) {
    const std::string cmd = bin + " " + args + " >" + tmp.file("out") + " 2>" + tmp.file("err");
    const int rc = std::system(cmd.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  };
  ASSERT_EQ(sh("perplexity " + model + " -f " + text + " --chunks 2 --ctx 128 --kld-base " + tmp.file("b") +
               " --kld-base-format llama"),
            0)
      << edgeq::test::read_text(tmp.file("err"));
  const auto b = edgeq::test::read_file(tmp.file("b"));
  ASSERT_GE(b.size(), 8u);
  EXPECT_EQ(std::string(b.begin(), b.begin() + 8), "_logits_");
  ASSERT_EQ(sh("perplexity " + model + " -f " + text + " --ctx 128 --kld " + tmp.file("b") + " --json"), 0)
      << edgeq::test::read_text(tmp.file("err"));
  const auto j = nlohmann::json::parse(edgeq::test::read_text(tmp.file("out")));
  EXPECT_EQ(j["n_chunks"], 2);
  EXPECT_LT(std::fabs(j["kld"]["mean_kld"].get<double>()), 1e-4);
  EXPECT_EQ(j["kld"]["same_top_p_pct"].get<double>(), 100.0);
  EXPECT_EQ(sh("perplexity " + model + " -f " + text + " --kld-base-format llama"), 2);  // needs --kld-base
  EXPECT_EQ(sh("perplexity " + model + " -f " + text + " --kld-base x --kld-base-format gguf"), 2);
}
