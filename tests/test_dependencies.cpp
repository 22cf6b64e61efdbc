// Dependencies stay honest: no linked-but-unused library (Highway was one), and every Debian package that
// scripts/setup.sh installs is explained in docs/DEPENDENCIES.md.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include "test_helpers.h"

namespace {

std::string read_text(const std::string& path) {
  EXPECT_TRUE(std::ifstream(path, std::ios::binary).good()) << path;
  return edgeq::test::read_text(path);
}

TEST(Dependencies, HighwayIsNotLinked) {
  const std::string ninja = std::string(EDGEQ_BINARY_DIR) + "/build.ninja";
  std::ifstream probe(ninja);
  if (!probe.good()) GTEST_SKIP() << "not a Ninja build: " << ninja;
  const std::string text = read_text(ninja);
  EXPECT_EQ(text.find("libhwy"), std::string::npos);
  EXPECT_EQ(text.find("-lhwy"), std::string::npos);
}

TEST(Dependencies, EverySetupPackageIsDocumented) {
  const std::string setup = read_text(std::string(EDGEQ_SOURCE_DIR) + "/scripts/setup.sh");
  const std::string docs = read_text(std::string(EDGEQ_SOURCE_DIR) + "/docs/DEPENDENCIES.md");
  const size_t b = setup.find("PKGS=(");
  ASSERT_NE(b, std::string::npos);
  const size_t e = setup.find(')', b);
  ASSERT_NE(e, std::string::npos);
  std::istringstream in(setup.substr(b + 6, e - b - 6));
  int n = 0;
  for (std::string pkg; in >> pkg; ++n) EXPECT_NE(docs.find("`" + pkg + "`"), std::string::npos) << pkg;
  EXPECT_GT(n, 10);
  EXPECT_EQ(setup.find("libhwy"), std::string::npos);
}

}  // namespace
