// The report's two plots as standalone SVG: perplexity (linear) and mean KL divergence (log10) against bits
// per weight, one point per file, one line per method (budget entries: a dashed line of diamonds per method), the
// reference PPL as a dashed line, a legend.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "edgeq/compare/report.h"
#include "edgeq/compare/sweep.h"

namespace edgeq::compare {

namespace {

constexpr int kWidth = 760, kHeight = 480;
constexpr double kLeft = 80, kRight = 570, kTop = 56, kBottom = 410;

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

// A step of 1, 2 or 5 x 10^k giving at most ~8 intervals over span.
double nice_step(double span) {
  const double raw = span / 8.0;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * p >= raw) return m * p;
  return 10 * p;
}

}  // namespace

double PlotAxis::to_px(double v) const {
  if (log && v <= 0) return px0;  // a KLD that rounds to zero or below sits on the bottom axis
  const double d = log ? std::log10(v) : v;
  return px0 + (d - min) / (max - min) * (px1 - px0);
}

std::string method_colour(const std::string& method) {
  static const char* palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"};
  const auto& ms = methods();
  for (size_t i = 0; i < ms.size(); ++i)
    if (method == ms[i].name) return palette[i % std::size(palette)];
  return "#7f7f7f";
}

PlotGeometry plot_geometry(const Report& r, bool kld) {
  PlotGeometry g;
  g.width = kWidth;
  g.height = kHeight;
  double xlo = 1e300, xhi = -1e300, ylo = 1e300, yhi = -1e300;
  for (auto& e : r.entries) {
    xlo = std::min(xlo, e.bits_per_weight);
    xhi = std::max(xhi, e.bits_per_weight);
    if (kld && e.mean_kld <= 0) continue;  // drawn on the bottom axis
    const double y = kld ? std::log10(e.mean_kld) : e.ppl;
    ylo = std::min(ylo, y);
    yhi = std::max(yhi, y);
  }
  if (r.entries.empty()) xlo = 0, xhi = 16;
  if (ylo > yhi) ylo = kld ? -6 : 0, yhi = kld ? -5 : 1;
  if (!kld) {
    ylo = std::min(ylo, r.reference.ppl);
    yhi = std::max(yhi, r.reference.ppl);
  }
  g.x.min = std::floor(xlo);
  g.x.max = std::max(std::ceil(xhi), g.x.min + 1);
  if (kld) {
    g.y.log = true;
    g.y.min = std::floor(ylo);
    g.y.max = std::max(std::ceil(yhi), g.y.min + 1);
  } else {
    const double span = std::max(yhi - ylo, 1e-3 * std::max(1.0, std::fabs(yhi)));
    const double step = nice_step(span * 1.1);
    g.y.min = std::floor((ylo - 0.05 * span) / step) * step;
    g.y.max = std::ceil((yhi + 0.05 * span) / step) * step;
  }
  g.x.px0 = kLeft;
  g.x.px1 = kRight;
  g.y.px0 = kBottom;  // y grows downwards in SVG
  g.y.px1 = kTop;
  return g;
}

std::string render_svg(const Report& r, bool kld) {
  const PlotGeometry g = plot_geometry(r, kld);
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"DejaVu Sans, Arial, sans-serif\" font-size=\"12\">\n"
      "<rect x=\"0\" y=\"0\" width=\"{0}\" height=\"{1}\" fill=\"#ffffff\"/>\n",
      g.width, g.height);
  const std::string name = std::filesystem::path(r.reference.source).filename().string();
  s += fmt::format("<text x=\"{}\" y=\"28\" font-size=\"16\" font-weight=\"bold\">{}</text>\n", kLeft,
                   esc(kld ? "Mean KL divergence from the reference vs bits per weight: " + name
                           : "Perplexity vs bits per weight: " + name));
  s += fmt::format("<text x=\"{}\" y=\"46\" fill=\"#555555\">{}</text>\n", kLeft,
                   esc(fmt::format("{} scored tokens of {}, n_ctx {}; reference {} (PPL {:.4f})", r.reference.scored,
                                   std::filesystem::path(r.reference.eval_text).filename().string(), r.reference.n_ctx,
                                   r.reference.file_type, r.reference.ppl)));
  // grid, ticks and tick labels
  s += "<g stroke=\"#e0e0e0\" stroke-width=\"1\">\n";
  std::string labels;
  const double xstep = std::max(1.0, std::ceil((g.x.max - g.x.min) / 10.0));
  for (double x = g.x.min; x <= g.x.max + 1e-9; x += xstep) {
    const double px = g.x.px0 + (x - g.x.min) / (g.x.max - g.x.min) * (g.x.px1 - g.x.px0);
    s += fmt::format("<line x1=\"{0:.2f}\" y1=\"{1}\" x2=\"{0:.2f}\" y2=\"{2}\"/>\n", px, kTop, kBottom);
    labels += fmt::format("<text x=\"{:.2f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", px, kBottom + 18, x);
  }
  const double ystep = g.y.log ? 1.0 : nice_step(g.y.max - g.y.min);
  for (double y = g.y.min; y <= g.y.max + 1e-9 * std::max(1.0, std::fabs(g.y.max)); y += ystep) {
    const double py = g.y.px0 + (y - g.y.min) / (g.y.max - g.y.min) * (g.y.px1 - g.y.px0);
    s += fmt::format("<line x1=\"{0}\" y1=\"{1:.2f}\" x2=\"{2}\" y2=\"{1:.2f}\"/>\n", kLeft, py, kRight);
    const std::string t = g.y.log ? fmt::format("1e{}", static_cast<int>(std::lround(y))) : fmt::format("{:g}", y);
    labels += fmt::format("<text x=\"{}\" y=\"{:.2f}\" text-anchor=\"end\">{}</text>\n", kLeft - 6, py + 4, t);
  }
  s += "</g>\n" + labels;
  s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333333\"/>\n", kLeft,
                   kTop, kRight - kLeft, kBottom - kTop);
  // axis labels
  s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">bits per weight (tensor data bits / parameters)</text>\n",
                   (kLeft + kRight) / 2, kBottom + 42);
  s += fmt::format("<text transform=\"translate(22 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
                   (kTop + kBottom) / 2,
                   kld ? "mean KL divergence (log scale)" : "perplexity (lower is better)");
  // reference PPL
  double ly = 80;
  std::string legend;
  if (!kld) {
    const double py = g.y.to_px(r.reference.ppl);
    s += fmt::format("<line x1=\"{}\" y1=\"{:.2f}\" x2=\"{}\" y2=\"{:.2f}\" stroke=\"#555555\" stroke-dasharray=\"6 4\"/>\n",
                     kLeft, py, kRight, py);
    legend += fmt::format(
        "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#555555\" stroke-dasharray=\"6 4\"/>"
        "<text x=\"{3}\" y=\"{4}\">reference ({5})</text>\n",
        kRight + 20, ly, kRight + 44, kRight + 52, ly + 4, esc(r.reference.file_type));
    ly += 22;
  }
  // one line and a set of points per method, in the methods table's order; the budget entries of a method after
  // the fixed mixes, as a dashed line with diamonds (black-edged, so the gain over the fixed mixes stands out)
  std::map<std::pair<size_t, bool>, std::vector<const EntryResult*>> by_method;
  const auto& ms = methods();
  for (auto& e : r.entries) {
    size_t rank = ms.size();
    for (size_t i = 0; i < ms.size(); ++i)
      if (e.method == ms[i].name) rank = i;
    by_method[{rank, e.is_budget()}].push_back(&e);
  }
  std::set<std::string> labelled;
  for (auto& [series, es] : by_method) {
    const bool budget = series.second;
    std::sort(es.begin(), es.end(), [](auto* a, auto* b) { return a->bits_per_weight < b->bits_per_weight; });
    const std::string col = method_colour(es[0]->method);
    const std::string dash = budget ? " stroke-dasharray=\"5 3\"" : "";
    std::string pts;
    for (auto* e : es)
      pts += fmt::format("{:.2f},{:.2f} ", g.x.to_px(e->bits_per_weight), g.y.to_px(kld ? e->mean_kld : e->ppl));
    s += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{}/>\n", pts, col, dash);
    auto marker = [&](double x, double y, const std::string& attrs) {
      if (!budget) return fmt::format("<circle cx=\"{:.2f}\" cy=\"{:.2f}\" r=\"5\" fill=\"{}\" {}", x, y, col, attrs);
      return fmt::format("<polygon points=\"{:.2f},{:.2f} {:.2f},{:.2f} {:.2f},{:.2f} {:.2f},{:.2f}\" fill=\"{}\" {}", x,
                         y - 7, x + 7, y, x, y + 7, x - 7, y, col, attrs);
    };
    const char* tag = budget ? "polygon" : "circle";
    for (auto* e : es) {
      const double px = g.x.to_px(e->bits_per_weight), py = g.y.to_px(kld ? e->mean_kld : e->ppl);
      s += marker(px, py,
                  fmt::format("stroke=\"{}\" stroke-width=\"{}\" data-type=\"{}\" data-method=\"{}\"{}><title>{} {}: "
                              "{:.2f} bpw, PPL {:.4f}, mean KLD {:.6f}</title></{}>\n",
                              budget ? "#000000" : "#ffffff", budget ? 1.5 : 1.0, esc(e->type), esc(e->method),
                              budget ? " data-budget=\"true\"" : "", esc(e->type), esc(e->method), e->bits_per_weight,
                              e->ppl, e->mean_kld, tag));
      if (labelled.insert(e->type).second)  // one label per type (methods of a type sit close together)
        s += fmt::format("<text x=\"{:.2f}\" y=\"{:.2f}\" font-size=\"10\" fill=\"#333333\">{}</text>\n", px + 7,
                         py - 7, esc(e->type));
    }
    legend += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"{3}\" stroke-width=\"2\"{4}/>",
                          kRight + 20, ly, kRight + 44, col, dash);
    legend += marker(kRight + 32, ly, fmt::format("stroke=\"{}\"/>", budget ? "#000000" : "#ffffff"));
    legend += fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n", kRight + 52, ly + 4,
                          esc(budget ? "budget (" + es[0]->method + ")" : es[0]->method));
    ly += 22;
  }
  if (kld && std::any_of(r.entries.begin(), r.entries.end(), [](auto& e) { return e.mean_kld <= 0; }))
    legend += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"#555555\">KLD \u2264 0: on the bottom axis</text>\n",
                          kRight + 20, ly + 4);
  s += fmt::format("<text x=\"{}\" y=\"66\" font-weight=\"bold\">method</text>\n", kRight + 20);
  s += legend;
  s += "</svg>\n";
  return s;
}

}  // namespace edgeq::compare
