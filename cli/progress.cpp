#include "progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fmt/format.h>

namespace edgeq::cli {

namespace {
bool g_quiet = false;
}

void set_quiet(bool quiet) { g_quiet = quiet; }

ProgressStyle progress_style() {
  if (g_quiet) return ProgressStyle::Off;
  if (const char* e = std::getenv("EDGEQ_PROGRESS"); e && e[0] == '0') return ProgressStyle::Off;
  return isatty(2) ? ProgressStyle::Live : ProgressStyle::Lines;
}

std::string format_duration(double s) {
  if (!(s >= 0) || !std::isfinite(s)) return "?";
  const long t = std::lround(s);
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

Progress::Progress(std::string task, bool enabled)
    : task_(std::move(task)),
      style_(enabled ? progress_style() : ProgressStyle::Off),
      start_(std::chrono::steady_clock::now()),
      last_(start_) {}

Progress::~Progress() { end_live_line(); }

void Progress::end_live_line() {
  if (live_open_) std::fputs("\n", stderr);
  live_open_ = false;
}

void Progress::update(double fraction, const std::string& text) {
  if (style_ == ProgressStyle::Off) return;
  fraction = std::fmin(1.0, std::fmax(0.0, fraction));
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double since = std::chrono::duration<double>(now - last_).count();
  const bool last = fraction >= 1.0;
  if (last && final_printed_) return;
  final_printed_ = final_printed_ || last;
  std::string eta;
  if (fraction > 0.01 && elapsed > 1.0 && !last) eta = ", ETA " + format_duration(elapsed * (1.0 - fraction) / fraction);
  if (style_ == ProgressStyle::Live) {
    if (!last && since < 0.1 && live_open_) return;  // at most 10 redraws a second
    std::fprintf(stderr, "\r%s: %3.0f%% %s (%s%s)\x1b[K", task_.c_str(), 100.0 * fraction, text.c_str(),
                 format_duration(elapsed).c_str(), eta.c_str());
    std::fflush(stderr);
    live_open_ = true;
    last_ = now;
    if (last) end_live_line();
    return;
  }
  // plain lines: when a 10% step is crossed, at the end, or after 30 s without a line
  const int decile = static_cast<int>(std::floor(fraction * 10.0 + 1e-9));
  if (!last && decile < next_decile_ && since < 30.0) return;
  if (decile >= next_decile_) next_decile_ = decile + 1;
  std::fprintf(stderr, "%s: %3.0f%% %s (%s elapsed%s)\n", task_.c_str(), 100.0 * fraction, text.c_str(),
               format_duration(elapsed).c_str(), eta.c_str());
  std::fflush(stderr);
  last_ = now;
}

void Progress::note(const std::string& text) {
  if (style_ == ProgressStyle::Off) return;
  end_live_line();
  std::fprintf(stderr, "%s: %s\n", task_.c_str(), text.c_str());
  std::fflush(stderr);
}

}  // namespace edgeq::cli
