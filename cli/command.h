// Subcommand registry: each cli/cmd_<name>.cpp defines a static edgeq::cli::Register that adds its
// subcommand to the CLI11 app and returns the function to run. cli/ only wires libraries together.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace edgeq::cli {

// setup() adds a subcommand to `app` and returns the action to run when it is selected (returns exit code).
using Setup = std::function<std::function<int()>(CLI::App& app)>;

struct Register {
  Register(int order, Setup setup);
};

struct Registration {
  int order;
  Setup setup;
};
std::vector<Registration>& registry();

}  // namespace edgeq::cli
