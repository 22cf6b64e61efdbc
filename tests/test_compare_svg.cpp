// The report's SVG plots in a real browser: headless Chromium (Debian's `chromium`, installed by
// scripts/setup.sh) renders each plot of a real sweep to a PNG; the picture is not blank, and at the pixel
// where report.json's axes put each entry there is a point in its method's colour. Skipped when chromium is
// not installed.
#include <gtest/gtest.h>
#include <png.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "edgeq/compare/report.h"
#include "edgeq/compare/sweep.h"
#include "edgeq/formats/mapped_file.h"

namespace fs = std::filesystem;

namespace {

struct Image {
  int w = 0, h = 0;
  std::vector<uint8_t> rgb;
  std::array<int, 3> at(int x, int y) const {
    const size_t i = (static_cast<size_t>(y) * w + x) * 3;
    return {rgb[i], rgb[i + 1], rgb[i + 2]};
  }
};

Image read_png(const std::string& path) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  Image out;
  if (!png_image_begin_read_from_file(&img, path.c_str())) return out;
  img.format = PNG_FORMAT_RGB;
  out.rgb.resize(PNG_IMAGE_SIZE(img));
  if (!png_image_finish_read(&img, nullptr, out.rgb.data(), 0, nullptr)) return Image{};
  out.w = static_cast<int>(img.width);
  out.h = static_cast<int>(img.height);
  return out;
}

std::array<int, 3> hex_colour(const std::string& s) {
  return {std::stoi(s.substr(1, 2), nullptr, 16), std::stoi(s.substr(3, 2), nullptr, 16),
          std::stoi(s.substr(5, 2), nullptr, 16)};
}

bool have_chromium() { return std::system("command -v chromium >/dev/null 2>&1") == 0; }

}  // namespace

TEST(CompareSvg, PlotsRenderInChromiumWithPointsWhereTheReportSays) {
  if (!have_chromium()) GTEST_SKIP() << "chromium is not installed (scripts/setup.sh installs it)";
  const auto dir = fs::temp_directory_path() / ("edgeq-svg-" + std::to_string(getpid()));
  fs::remove_all(dir);
  edgeq::compare::SweepOptions o;
  o.source = std::string(EDGEQ_SOURCE_DIR) + "/data/tl-8m";
  o.eval_text = std::string(EDGEQ_SOURCE_DIR) + "/data/eval.txt";
  o.out_dir = dir.string();
  o.types = {"Q8_0", "Q4_K_M", "Q3_K_M", "Q2_K"};
  o.n_ctx = 128;
  o.max_chunks = 2;
  o.threads = 2;
  edgeq::compare::run_sweep(o);
  const auto report = nlohmann::json::parse(edgeq::read_text_file((dir / "report.json").string()));
  ASSERT_EQ(report["entries"].size(), 4u);

  for (const std::string plot : {"ppl_vs_bpw.svg", "kld_vs_bpw.svg"}) {
    const auto& g = report["plots"][plot];
    const int W = g["width"], H = g["height"];
    const auto png = dir / (plot + ".png");
    const auto profile = dir / ("chromium-profile-" + plot);  // a fresh profile each time
    const std::string cmd =
        "chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking "
        "--disable-component-update --disable-sync --hide-scrollbars --force-device-scale-factor=1 --user-data-dir='" +
        profile.string() + "' --window-size=" + std::to_string(W) + "," + std::to_string(H) + " --screenshot='" +
        png.string() + "' 'file://" + (dir / plot).string() + "' >/dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    const Image img = read_png(png.string());
    ASSERT_EQ(img.w, W) << plot;
    ASSERT_EQ(img.h, H) << plot;

    // not blank: a fair share of non-white pixels and several colours
    size_t ink = 0;
    std::set<int> colours;
    for (int y = 0; y < img.h; ++y)
      for (int x = 0; x < img.w; ++x) {
        auto c = img.at(x, y);
        if (c[0] < 235 || c[1] < 235 || c[2] < 235) ++ink;
        colours.insert((c[0] >> 4) << 8 | (c[1] >> 4) << 4 | (c[2] >> 4));
      }
    EXPECT_GT(ink, static_cast<size_t>(W * H / 50)) << plot;
    EXPECT_GT(colours.size(), 8u) << plot;

    // each entry's point is drawn where the axes in report.json put its numbers
    auto px = [](const nlohmann::json& a, double v) {
      if (a["log"].get<bool>() && v <= 0) return a["px0"].get<double>();  // KLD <= 0: on the bottom axis
      const double d = a["log"].get<bool>() ? std::log10(v) : v;
      return a["px0"].get<double>() + (d - a["min"].get<double>()) / (a["max"].get<double>() - a["min"].get<double>()) *
                                          (a["px1"].get<double>() - a["px0"].get<double>());
    };
    const bool kld = plot == "kld_vs_bpw.svg";
    for (auto& e : report["entries"]) {
      const int x = static_cast<int>(std::lround(px(g["x"], e["bits_per_weight"].get<double>())));
      const int y = static_cast<int>(std::lround(px(g["y"], e[kld ? "mean_kld" : "ppl"].get<double>())));
      ASSERT_TRUE(x >= 0 && x < W && y >= 0 && y < H) << plot << " " << e["type"];
      const auto want = hex_colour(edgeq::compare::method_colour(e["method"]));
      const auto got = img.at(x, y);
      for (int c = 0; c < 3; ++c)
        EXPECT_NEAR(got[c], want[c], 24) << plot << " " << e["type"] << " at " << x << "," << y;
      // and the point is a dot, not a line: 9 px to either side is another colour
      const auto side = img.at(std::min(W - 1, x + 9), std::max(0, y - 9));
      EXPECT_FALSE(std::abs(side[0] - want[0]) < 24 && std::abs(side[1] - want[1]) < 24 && std::abs(side[2] - want[2]) < 24)
          << plot << " " << e["type"];
    }
  }
  fs::remove_all(dir);
}
