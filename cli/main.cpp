// The edgeq program: wires the libraries' subcommands together. Errors from the libraries reach the user
// as one line "edgeq: error: <message>" and exit code 1; usage errors exit 2.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
#include <string>

#include "command.h"
#include "edgeq/base/error.h"
#include "options.h"
#include "edgeq/formats/mapped_file.h"
#include "progress.h"

int main(int argc, char** argv) {
  using namespace edgeq::cli;
  edgeq::protect_inputs(true);        // no output of this command replaces a file it reads
  edgeq::install_signal_cleanup();  // Ctrl-C / SIGTERM: unfinished outputs are removed, exit 130 / 143
  CLI::App app{"edgeq: convert, quantize and validate language models for GGUF runtimes (llama.cpp)", "edgeq"};
  app.require_subcommand(1);
  app.footer("Progress goes to stderr: a live line on a terminal, plain lines every 10% elsewhere; -q/--quiet on any "
             "subcommand, or the environment variable EDGEQ_PROGRESS=0, turns it off.");
  app.set_version_flag("--version", "edgeq 0.1.0");
  std::vector<std::pair<CLI::App*, std::function<int()>>> actions;
  for (Setup setup : kCommands) {
    size_t before = app.get_subcommands({}).size();
    auto action = setup(app);
    auto subs = app.get_subcommands({});
    if (subs.size() > before) {
      subs.back()->add_flag_callback("-q,--quiet", [] { set_quiet(true); }, "No progress display on stderr");
      actions.emplace_back(subs.back(), std::move(action));
    }
  }
  // An unknown first word is a subcommand typo, not a missing subcommand.
  if (argc >= 2 && argv[1][0] != '-') {
    bool known = false;
    std::string names;
    for (auto* sub : app.get_subcommands({})) {
      known = known || sub->get_name() == argv[1];
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      std::fprintf(stderr, "edgeq: error: unknown command '%s' (commands: %s; edgeq --help)\n", argv[1], names.c_str());
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    // One line naming the flag (CLI11's own output is two: the message and "Run with --help").
    std::string msg = e.what(), sub;
    for (char& ch : msg)
      if (ch == '\n') ch = ' ';
    while (!msg.empty() && msg.back() == ' ') msg.pop_back();
    for (auto* s : app.get_subcommands({}))
      if (s->parsed()) sub = s->get_name() + " ";
    std::fprintf(stderr, "edgeq: error: %s (edgeq %s--help)\n", msg.c_str(), sub.c_str());
    return 2;
  }
  try {
    for (auto& [sub, action] : actions)
      if (sub->parsed()) return action();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "edgeq: error: %s\n", e.what());
    return 2;
  } catch (const edgeq::Error& e) {
    std::fprintf(stderr, "edgeq: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "edgeq: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "edgeq: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
