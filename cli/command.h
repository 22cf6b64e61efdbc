// The subcommands: each cli/cmd_<name>.cpp defines cmd_<name>::setup, which adds its subcommand to the CLI11 app
// and returns the function to run; kCommands lists them in the order `edgeq --help` shows them. cli/ only wires
// libraries together.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace edgeq::cli {

// setup() adds a subcommand to `app` and returns the action to run when it is selected (returns exit code).
using Setup = std::function<int()> (*)(CLI::App& app);

}  // namespace edgeq::cli

namespace cmd_inspect { std::function<int()> setup(CLI::App& app); }
namespace cmd_convert { std::function<int()> setup(CLI::App& app); }
namespace cmd_quantize { std::function<int()> setup(CLI::App& app); }
namespace cmd_calibrate { std::function<int()> setup(CLI::App& app); }
namespace cmd_perplexity { std::function<int()> setup(CLI::App& app); }
namespace cmd_tokenize { std::function<int()> setup(CLI::App& app); }
namespace cmd_generate { std::function<int()> setup(CLI::App& app); }
namespace cmd_compare { std::function<int()> setup(CLI::App& app); }

namespace edgeq::cli {
inline constexpr Setup kCommands[] = {cmd_inspect::setup,    cmd_convert::setup,  cmd_quantize::setup,
                                      cmd_calibrate::setup,  cmd_perplexity::setup, cmd_tokenize::setup,
                                      cmd_generate::setup,   cmd_compare::setup};
}  // namespace edgeq::cli
