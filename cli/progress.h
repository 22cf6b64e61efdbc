// The one progress display of every command (stderr, never stdout). On a terminal: a live line rewritten in
// place; elsewhere (a pipe, tee, nohup, CI): plain lines at intervals (every 10% of the task, or at least
// every 30 s). Off with --quiet (every subcommand has it), with --json, or with the environment variable
// EDGEQ_PROGRESS=0 (for scripts that cannot add a flag); EDGEQ_PROGRESS=1 is the default behaviour.
#pragma once
#include <chrono>
#include <string>

namespace edgeq::cli {

enum class ProgressStyle { Off, Live, Lines };

// Decided once per run from --quiet, EDGEQ_PROGRESS and whether stderr is a terminal.
ProgressStyle progress_style();
void set_quiet(bool quiet);  // --quiet (main.cpp adds it to every subcommand)

class Progress {
 public:
  // task names the command ("perplexity"); enabled = false (e.g. --json) turns it off.
  explicit Progress(std::string task, bool enabled = true);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  bool enabled() const { return style_ != ProgressStyle::Off; }
  // fraction: of the whole task, 0..1 (drives the percentage and the ETA); text: what is happening now.
  void update(double fraction, const std::string& text);
  // A line that stays (a stage change, a summary), printed in every style except Off.
  void note(const std::string& text);

 private:
  void end_live_line();
  std::string task_;
  ProgressStyle style_;
  std::chrono::steady_clock::time_point start_, last_;
  int next_decile_ = 1;
  bool live_open_ = false;
  bool final_printed_ = false;
};

// "1m05s", "12s", "2h03m".
std::string format_duration(double seconds);

}  // namespace edgeq::cli
