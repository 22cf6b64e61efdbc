// Split GGUF (llama.cpp's gguf-split layout): the writer's split options against gguf-split's documented
// layout, the reader joining a set (and refusing broken ones with one line naming the file), and every
// command that reads a GGUF giving the same results on a split set as on the unsplit file.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "test_helpers.h"

using namespace edgeq;
using edgeq::test::shared;
using edgeq::test::TempDir;
namespace fs = std::filesystem;

namespace {

const std::string kF16 = shared("golden/tl-8m-F16.gguf");

// Rewrites `src` through GgufWriter with split options (as convert/quantize do); returns the files.
std::vector<std::string> write_split(const GgufFile& src, const std::string& out, const GgufSplitOptions& opt) {
  GgufWriter w(out, opt);
  for (auto& [k, v] : src.metadata()) w.set(k, v);
  for (auto& t : src.tensors()) w.add_tensor(t.name, t.dims, t.type);
  const auto paths = w.output_paths();
  for (auto& t : src.tensors()) {
    const auto v = src.view(t);
    w.write_tensor_data(v.data, v.nbytes);
  }
  w.finish();
  return paths;
}

// gguf-split's plan, computed here from its documented rule (examples/gguf-split: a new file when the tensor
// count reaches --split-max-tensors, or when the tensor data so far plus the next tensor padded to 32 bytes
// exceeds --split-max-size): the number of tensors in each file.
std::vector<size_t> gguf_split_plan(const GgufFile& src, const GgufSplitOptions& opt) {
  std::vector<size_t> counts{0};
  uint64_t bytes = 0;
  for (size_t i = 0; i < src.tensors().size(); ++i) {
    const uint64_t n = (src.tensors()[i].nbytes + 31) / 32 * 32;
    const bool brk = opt.max_tensors ? (i > 0 && i % opt.max_tensors == 0) : (bytes + n > opt.max_bytes);
    if (brk) {
      counts.push_back(0);
      bytes = 0;
    }
    bytes += n;
    ++counts.back();
  }
  return counts;
}

// The value bytes of a key in a file (after its name and type), to corrupt a set on purpose.
void patch_key(const std::string& path, const std::string& key, const void* value, size_t n) {
  auto b = edgeq::test::read_file(path);
  const std::string needle = key;
  auto it = std::search(b.begin(), b.end(), needle.begin(), needle.end());
  ASSERT_NE(it, b.end()) << key;
  std::memcpy(&*it + needle.size() + 4, value, n);
  edgeq::test::write_file(path, b);
}

void rename_tensor(const std::string& path, const std::string& from, const std::string& to) {
  ASSERT_EQ(from.size(), to.size());
  auto b = edgeq::test::read_file(path);
  auto it = std::search(b.begin(), b.end(), from.begin(), from.end());
  ASSERT_NE(it, b.end()) << from;
  std::memcpy(&*it, to.data(), to.size());
  edgeq::test::write_file(path, b);
}

std::string open_error(const std::string& path) {
  try {
    (void)GgufFile::open(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

struct Run {
  int code = -1;
  std::string out, err;
};
Run run_cli(const std::string& args) {
  const std::string exe = std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq";
  const std::string base = (fs::temp_directory_path() / ("edgeq-split-" + std::to_string(getpid()))).string();
  Run r;
  const int st = std::system(("EDGEQ_PROGRESS=0 " + exe + " " + args + " >" + base + ".out 2>" + base + ".err").c_str());
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.out = edgeq::test::read_text(base + ".out");
  r.err = edgeq::test::read_text(base + ".err");
  std::remove((base + ".out").c_str());
  std::remove((base + ".err").c_str());
  return r;
}
bool have_cli() { return fs::exists(std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq"); }

}  // namespace

TEST(GgufSplit, NamesAndSizesAsLlamaCpp) {
  EXPECT_EQ(gguf_split_path("/m/model-q4_0", 1, 4), "/m/model-q4_0-00002-of-00004.gguf");  // llama.h's example
  EXPECT_EQ(gguf_split_prefix("dir/model.gguf"), "dir/model");
  EXPECT_EQ(gguf_split_prefix("dir/model"), "dir/model");
  EXPECT_EQ(parse_split_size("500M"), 500'000'000u);
  EXPECT_EQ(parse_split_size("2G"), 2'000'000'000u);
  for (const char* bad : {"", "M", "0M", "5K", "1.5G", "-1G", "5", "G5"}) EXPECT_THROW(parse_split_size(bad), Error) << bad;
}

// The writer's files against gguf-split's layout: names, split keys (types, values, order: split.no,
// split.tensors.count, split.count last), all metadata in the first file only, each file's own tensors
// with offsets from its own data section, and the tensor data unchanged.
TEST(GgufSplit, WriterLaysOutFilesAsGgufSplit) {
  const GgufFile src = GgufFile::open(kF16);
  const size_t n = src.tensors().size();
  for (const GgufSplitOptions opt : {GgufSplitOptions{0, 20}, GgufSplitOptions{5'000'000, 0}, GgufSplitOptions{0, 1000}}) {
    SCOPED_TRACE(fmt::format("max_bytes {} max_tensors {}", opt.max_bytes, opt.max_tensors));
    TempDir d;
    const auto paths = write_split(src, d.file("m.gguf"), opt);
    const auto plan = gguf_split_plan(src, opt);
    ASSERT_EQ(paths.size(), plan.size());
    ASSERT_GT(plan.size(), opt.max_tensors == 1000 ? 0u : 2u);
    size_t next = 0;
    for (size_t k = 0; k < paths.size(); ++k) {
      EXPECT_EQ(paths[k], gguf_split_path(d.file("m"), static_cast<uint32_t>(k), static_cast<uint32_t>(paths.size())));
      const auto bytes = edgeq::test::read_file(paths[k]);
      const GgufFile f = GgufFile::parse(bytes.data(), bytes.size(), paths[k]);  // this one file alone
      const auto& md = f.metadata();
      const size_t n_src_keys = k == 0 ? src.metadata().size() : 0;
      ASSERT_EQ(md.size(), n_src_keys + 3);
      for (size_t i = 0; i < n_src_keys; ++i) {
        EXPECT_EQ(md[i].first, src.metadata()[i].first);
        EXPECT_TRUE(md[i].second == src.metadata()[i].second) << md[i].first;
      }
      EXPECT_EQ(md[n_src_keys].first, "split.no");
      EXPECT_TRUE(md[n_src_keys].second == GgufValue(static_cast<uint16_t>(k)));
      EXPECT_EQ(md[n_src_keys + 1].first, "split.tensors.count");
      EXPECT_TRUE(md[n_src_keys + 1].second == GgufValue(static_cast<int32_t>(n)));
      EXPECT_EQ(md[n_src_keys + 2].first, "split.count");
      EXPECT_TRUE(md[n_src_keys + 2].second == GgufValue(static_cast<uint16_t>(paths.size())));
      ASSERT_EQ(f.tensors().size(), plan[k]);
      uint64_t off = 0;
      for (const auto& t : f.tensors()) {
        const auto& want = src.tensors()[next++];
        EXPECT_EQ(t.name, want.name);
        EXPECT_EQ(t.dims, want.dims);
        EXPECT_EQ(t.type, want.type);
        EXPECT_EQ(t.offset, off) << t.name;  // packed from the start of this file's data section
        off += (t.nbytes + 31) / 32 * 32;
        EXPECT_EQ(0, std::memcmp(f.view(t).data, src.view(want).data, t.nbytes)) << t.name;
      }
      EXPECT_EQ(f.data_offset() + off, bytes.size());
      if (opt.max_bytes) {
        EXPECT_LE(off, opt.max_bytes);
      }
    }
    EXPECT_EQ(next, n);
    // Nothing else was written (no temp files, no unsplit file).
    EXPECT_EQ(static_cast<size_t>(std::distance(fs::directory_iterator(d.path), fs::directory_iterator())), paths.size());
  }
}

TEST(GgufSplit, TensorLargerThanTheLimitGetsAFileOfItsOwn) {
  const GgufFile src = GgufFile::open(kF16);
  TempDir d;
  const auto paths = write_split(src, d.file("m"), GgufSplitOptions{1'000'000, 0});  // token_embd is 4 MB
  const GgufFile set = GgufFile::open(paths[0]);
  ASSERT_EQ(set.tensors().size(), src.tensors().size());
  const auto* emb = set.find_tensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(set.splits()[emb->split].n_tensors, 1u);
  for (const auto& s : set.splits()) EXPECT_GT(s.n_tensors, 0u);
}

// Opening the first file opens the set: the same tensors, data and metadata (plus the split keys) as the
// unsplit file; sizes add up.
TEST(GgufSplit, ReaderJoinsTheSet) {
  const GgufFile src = GgufFile::open(kF16);
  TempDir d;
  const auto paths = write_split(src, d.file("m.gguf"), GgufSplitOptions{0, 16});
  const GgufFile set = GgufFile::open(paths[0]);
  ASSERT_EQ(set.splits().size(), paths.size());
  uint64_t total = 0;
  for (size_t k = 0; k < paths.size(); ++k) {
    EXPECT_EQ(set.splits()[k].path, paths[k]);
    EXPECT_EQ(set.splits()[k].file_size, fs::file_size(paths[k]));
    total += fs::file_size(paths[k]);
  }
  EXPECT_EQ(set.file_size(), total);
  ASSERT_EQ(set.tensors().size(), src.tensors().size());
  for (size_t i = 0; i < src.tensors().size(); ++i) {
    const auto& a = set.tensors()[i];
    const auto& b = src.tensors()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.split, i / 16);
    const auto va = set.view(a), vb = src.view(b);
    ASSERT_EQ(va.nbytes, vb.nbytes);
    EXPECT_EQ(0, std::memcmp(va.data, vb.data, va.nbytes)) << a.name;
  }
  EXPECT_EQ(set.metadata().size(), src.metadata().size() + 3);
  for (auto& [k, v] : src.metadata()) {
    ASSERT_NE(set.find(k), nullptr) << k;
    EXPECT_TRUE(*set.find(k) == v) << k;
  }
  // Rewriting the set unsplit drops the split keys (as llama-quantize) and gives the original file back.
  gguf_rewrite(set, d.file("whole.gguf"));
  EXPECT_EQ(edgeq::test::read_file(d.file("whole.gguf")), edgeq::test::read_file(kF16));
}

// Broken sets: one line naming the file at fault.
TEST(GgufSplit, BrokenSetsAreRefusedNamingTheFile) {
  const GgufFile src = GgufFile::open(kF16);
  TempDir d;
  const auto good = write_split(src, d.file("m.gguf"), GgufSplitOptions{0, 20});
  ASSERT_EQ(good.size(), 4u);
  const auto fresh = [&](const std::string& dir) {
    fs::create_directory(d.path / dir);
    std::vector<std::string> p;
    for (auto& g : good) {
      p.push_back((d.path / dir / fs::path(g).filename()).string());
      fs::copy_file(g, p.back());
    }
    return p;
  };
  const auto expect = [](const std::string& err, const std::string& file, const std::string& what) {
    EXPECT_EQ(err.find('\n'), std::string::npos) << err;
    EXPECT_NE(err.find(file), std::string::npos) << err;
    EXPECT_NE(err.find(what), std::string::npos) << err;
  };
  {
    auto p = fresh("missing");
    fs::remove(p[2]);
    expect(open_error(p[0]), p[2], "cannot open");
  }
  {
    auto p = fresh("truncated");
    fs::resize_file(p[1], fs::file_size(p[1]) - 100);
    expect(open_error(p[0]), p[1], "past the end");
  }
  {
    auto p = fresh("second");
    expect(open_error(p[1]), p[1], "open its first split");
  }
  {
    auto p = fresh("renamed");
    const std::string other = (fs::path(p[0]).parent_path() / "first.gguf").string();
    fs::rename(p[0], other);
    expect(open_error(other), other, "-00001-of-00004.gguf");
  }
  {
    auto p = fresh("splitno");
    const uint16_t two = 2;
    patch_key(p[1], "split.no", &two, 2);  // file 2 claims to be file 3
    expect(open_error(p[0]), p[1], "split.no is 2, expected 1");
  }
  {
    auto p = fresh("count");
    const uint16_t five = 5;
    patch_key(p[3], "split.count", &five, 2);
    expect(open_error(p[0]), p[3], "split.count is 5");
  }
  {
    auto p = fresh("tensors");
    const int32_t n = 74;
    patch_key(p[0], "split.tensors.count", &n, 4);
    expect(open_error(p[0]), p[0], "split.tensors.count is 74");
  }
  {
    auto p = fresh("duplicate");
    // good[1] holds blk.2.*; rename one of its tensors to a name that the first file holds.
    rename_tensor(p[1], "blk.2.attn_q.weight", "blk.0.attn_q.weight");
    expect(open_error(p[0]), p[1], "'blk.0.attn_q.weight' is also in");
  }
  {
    auto p = fresh("type");
    const uint32_t i16 = 3;  // split.count stored as int16 (same size): llama.cpp refuses the type
    auto b = edgeq::test::read_file(p[0]);
    const std::string key = "split.count";
    auto it = std::search(b.begin(), b.end(), key.begin(), key.end());
    ASSERT_NE(it, b.end());
    std::memcpy(&*it + key.size(), &i16, 4);
    edgeq::test::write_file(p[0], b);
    expect(open_error(p[0]), p[0], "split.count must be uint16");
  }
}

TEST(GgufSplit, JoinChecksWhatItIsGiven) {
  // join() (the fuzz target's entry) over in-memory files: the same checks without file names to follow.
  const GgufFile src = GgufFile::open(kF16);
  TempDir d;
  const auto p = write_split(src, d.file("m"), GgufSplitOptions{0, 40});
  ASSERT_EQ(p.size(), 2u);
  const auto a = edgeq::test::read_file(p[0]), b = edgeq::test::read_file(p[1]);
  auto fa = [&] { return GgufFile::parse(a.data(), a.size(), "a.gguf"); };
  auto fb = [&] { return GgufFile::parse(b.data(), b.size(), "b.gguf"); };
  EXPECT_EQ(GgufFile::join(fa(), {fb()}).tensors().size(), src.tensors().size());
  EXPECT_THROW(GgufFile::join(fa(), {}), Error);             // split.count 2, one file
  EXPECT_THROW(GgufFile::join(fa(), {fb(), fb()}), Error);   // three files
  EXPECT_THROW(GgufFile::join(fb(), {fa()}), Error);         // out of order
  EXPECT_THROW(GgufFile::join(fa(), {fa()}), Error);         // split.no 0 twice
}

// Every command that reads a GGUF on a llama.cpp-style split set: the same results as the unsplit file.
TEST(GgufSplitCli, CommandsReadSplitSetsAsTheUnsplitFile) {
  if (!have_cli()) GTEST_SKIP() << "edgeq not built";
  TempDir d;
  const auto paths = write_split(GgufFile::open(kF16), d.file("f16.gguf"), GgufSplitOptions{5'000'000, 0});
  ASSERT_EQ(paths.size(), 4u);
  const std::string split = paths[0];
  const std::string text = shared("text/tinystories-heldout.txt");
  // The sanitizer build runs a lighter slice (a cheaper type, one chunk): the same code paths.
  const std::string type = EDGEQ_SANITIZED ? "Q8_0" : "Q4_K_M";
  const std::string eval = " -f " + text + (EDGEQ_SANITIZED ? " --ctx 64 --chunks 1" : " --ctx 64 --chunks 3") + " --json --threads 2";

  // inspect
  auto a = run_cli("inspect --json " + split), b = run_cli("inspect --json " + kF16);
  ASSERT_EQ(a.code, 0) << a.err;
  ASSERT_EQ(b.code, 0) << b.err;
  auto ja = nlohmann::json::parse(a.out), jb = nlohmann::json::parse(b.out);
  EXPECT_EQ(ja["tensor_count"], jb["tensor_count"]);
  EXPECT_EQ(ja["splits"].size(), 4u);
  EXPECT_EQ(ja["bits_per_weight"], jb["bits_per_weight"]);
  EXPECT_EQ(ja["metadata"].size(), jb["metadata"].size() + 3);

  // quantize from the split set: byte-identical to quantizing the unsplit file (split keys dropped)
  a = run_cli("quantize " + split + " -o " + d.file("q-split-src.gguf") + " --type " + type + " --threads 2");
  b = run_cli("quantize " + kF16 + " -o " + d.file("q.gguf") + " --type " + type + " --threads 2");
  ASSERT_EQ(a.code, 0) << a.err;
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_EQ(edgeq::test::read_file(d.file("q-split-src.gguf")), edgeq::test::read_file(d.file("q.gguf")));
  // ... and into a split set: the same tensors, joined back to the same file
  a = run_cli("quantize " + kF16 + " -o " + d.file("qs.gguf") + " --type " + type + " --threads 2 --split-max-tensors 25 --json");
  ASSERT_EQ(a.code, 0) << a.err;
  ja = nlohmann::json::parse(a.out);
  ASSERT_EQ(ja["outputs"].size(), 3u);
  EXPECT_EQ(ja["output"], d.file("qs-00001-of-00003.gguf"));
  gguf_rewrite(GgufFile::open(d.file("qs-00001-of-00003.gguf")), d.file("qs-joined.gguf"));
  EXPECT_EQ(edgeq::test::read_file(d.file("qs-joined.gguf")), edgeq::test::read_file(d.file("q.gguf")));

  // perplexity: the same numbers
  a = run_cli("perplexity " + split + eval);
  b = run_cli("perplexity " + kF16 + eval);
  ASSERT_EQ(a.code, 0) << a.err;
  ASSERT_EQ(b.code, 0) << b.err;
  ja = nlohmann::json::parse(a.out), jb = nlohmann::json::parse(b.out);
  EXPECT_EQ(ja["chunk_ppl"], jb["chunk_ppl"]);
  EXPECT_EQ(ja["ppl"], jb["ppl"]);

  // compare: a split reference and a split candidate against the unsplit pair
  a = run_cli("compare " + split + " " + d.file("qs-00001-of-00003.gguf") + eval);
  b = run_cli("compare " + kF16 + " " + d.file("q.gguf") + eval);
  ASSERT_EQ(a.code, 0) << a.err;
  ASSERT_EQ(b.code, 0) << b.err;
  ja = nlohmann::json::parse(a.out), jb = nlohmann::json::parse(b.out);
  EXPECT_EQ(ja["base"]["ppl"], jb["base"]["ppl"]);
  for (const char* k : {"ppl", "mean_kld", "same_top_p_pct", "bits_per_weight", "parameters"})
    EXPECT_EQ(ja["candidates"][0][k], jb["candidates"][0][k]) << k;
  uint64_t split_bytes = 0;
  for (int k = 1; k <= 3; ++k) split_bytes += fs::file_size(d.file(fmt::format("qs-0000{}-of-00003.gguf", k)));
  EXPECT_EQ(ja["candidates"][0]["file_bytes"], split_bytes);

  // A missing file of the set: one line naming it, exit 1, for every command.
  fs::remove(paths[3]);
  for (const std::string& cmd : {"inspect " + split, "perplexity " + split + " -f " + text,
                                "quantize " + split + " -o " + d.file("x.gguf") + " --type Q8_0",
                                "compare " + split + " " + kF16 + " -f " + text}) {
    const auto r = run_cli(cmd);
    EXPECT_EQ(r.code, 1) << cmd;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(paths[3] + ": cannot open"), std::string::npos) << r.err;
  }
  EXPECT_FALSE(fs::exists(d.file("x.gguf")));
}

// convert writes split sets too; outputs never replace an input, whatever file of a set it is.
TEST(GgufSplitCli, ConvertSplitsAndOutputsNeverReplaceInputs) {
  if (!have_cli()) GTEST_SKIP() << "edgeq not built";
  TempDir d;
  auto r = run_cli("convert " + shared("models/tl-8m") + " -o " + d.file("c.gguf") + " --split-max-tensors 20");
  ASSERT_EQ(r.code, 0) << r.err;
  // tl-8m -> F16 is byte-identical to the golden, so its split set is the golden's split by the reference writer
  const auto want = write_split(GgufFile::open(kF16), d.file("w.gguf"), GgufSplitOptions{0, 20});
  ASSERT_EQ(want.size(), 4u);
  for (int k = 0; k < 4; ++k)
    EXPECT_EQ(edgeq::test::read_file(gguf_split_path(d.file("c"), k, 4)), edgeq::test::read_file(want[k])) << k;

  // Quantizing the set into names that are its own files is refused before any work; the inputs stay as they were.
  std::vector<std::vector<uint8_t>> before;
  for (int k = 0; k < 4; ++k) before.push_back(edgeq::test::read_file(gguf_split_path(d.file("c"), k, 4)));
  r = run_cli("quantize " + gguf_split_path(d.file("c"), 0, 4) + " -o " + d.file("c.gguf") +
              " --type F16 --split-max-tensors 20");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("is an input of this command"), std::string::npos) << r.err;
  for (int k = 0; k < 4; ++k) EXPECT_EQ(edgeq::test::read_file(gguf_split_path(d.file("c"), k, 4)), before[k]) << k;
  // A bad size is a usage error naming the flag.
  r = run_cli("convert " + shared("models/tl-8m") + " -o " + d.file("e.gguf") + " --split-max-size 1.5G");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("split size '1.5G'"), std::string::npos) << r.err;
  for (auto& e : fs::directory_iterator(d.path)) EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos);
}
