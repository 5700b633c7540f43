#include "mel/chart.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "mel/files.h"

namespace mel::app {
namespace {

constexpr const char* kFont = "DejaVu Sans, Helvetica, Arial, sans-serif";

enum class Kind { kHead, kExit, kMean, kNone };

Kind kind_of(const std::string& answer) {
  if (answer == "none" || answer.empty()) return Kind::kNone;
  if (answer.find('+') != std::string::npos) return Kind::kHead;
  if (answer.find(',') != std::string::npos) return Kind::kMean;
  return Kind::kExit;
}

const char* color(Kind k) {
  switch (k) {
    case Kind::kHead:
      return "#4c72b0";
    case Kind::kExit:
      return "#dd8452";
    case Kind::kMean:
      return "#55a868";
    case Kind::kNone:
      return "#999999";
  }
  return "#999999";
}

const char* legend_text(Kind k) {
  switch (k) {
    case Kind::kHead:
      return "combination head h S on C";
    case Kind::kExit:
      return "one upstream's exit";
    case Kind::kMean:
      return "exits answering independently (mean)";
    case Kind::kNone:
      return "no answer";
  }
  return "";
}

// Short enough to sit above a bar; the colour says which kind of predictor it is.
std::string bar_label(const std::string& answer) {
  switch (kind_of(answer)) {
    case Kind::kHead:
      return "h " + answer;
    case Kind::kExit:
      return "exit " + answer;
    case Kind::kMean:
      return "mean " + answer;
    case Kind::kNone:
      return "none";
  }
  return answer;
}

// Layout needs text widths without a font engine: per-character advances of DejaVu Sans (the
// widest common sans-serif), so the estimate errs on the roomy side for other fonts.
double text_width(const std::string& s, double font_px) {
  double em = 0.0;
  for (char c : s) {
    if (std::string_view(",.:;'il1| ").find(c) != std::string_view::npos) {
      em += 0.34;
    } else if (std::string_view("mwMW%+").find(c) != std::string_view::npos) {
      em += 0.9;
    } else if (c >= 'A' && c <= 'Z') {
      em += 0.72;
    } else {
      em += 0.64;
    }
  }
  return em * font_px;
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? sep : "") + parts[i];
  return out;
}

// Labels drawn over the grid or the dashed line get a white halo so they stay readable.
constexpr const char* kHalo =
    R"(stroke="#ffffff" stroke-width="6" stroke-linejoin="round" paint-order="stroke")";

}  // namespace

std::string failure_chart_svg(const FailureReport& r, const std::string& title) {
  const double label_px = 12, small_px = 11, bar_w = 36, min_slot = 50, group_gap = 18;
  const double margin_left = 70, margin_right = 20;
  const double title_y = 28, legend_y = 52;
  const double plot_top = 100;  // y of 100 %; the headroom above it holds the top bars' labels
  const double plot_h = 270, base = plot_top + plot_h;

  // Bars, grouped by number of failed servers.
  struct Bar {
    double x, w;  // slot
    std::string xlabel, label, value;
    Kind kind;
  };
  std::vector<Bar> bars;
  struct Group {
    double x0, x1;
    size_t failures;
  };
  std::vector<Group> groups;
  double x = margin_left + 16;
  for (size_t i = 0; i < r.patterns.size(); ++i) {
    const FailurePattern& p = r.patterns[i];
    if (i > 0 && p.failed.size() != r.patterns[i - 1].failed.size()) x += group_gap;
    Bar b;
    b.xlabel = p.failed.empty() ? "none failed" : join(p.failed, ",");
    b.label = bar_label(p.answer);
    b.value = fmt::format("{:.1f}", 100 * p.accuracy);
    b.kind = kind_of(p.answer);
    b.w = std::max({min_slot, text_width(b.xlabel, label_px) + 10,
                    1.1 * text_width(b.label, small_px) + 16, text_width(b.value, small_px) + 8});
    b.x = x;
    x += b.w;
    if (groups.empty() || groups.back().failures != p.failed.size()) {
      groups.push_back({b.x, b.x + b.w, p.failed.size()});
    } else {
      groups.back().x1 = b.x + b.w;
    }
    bars.push_back(std::move(b));
  }
  const double plot_right = x + 10;
  const std::string nf_label = fmt::format("no failure {:.1f}", 100 * r.no_failure_accuracy);
  const double width = plot_right + text_width(nf_label, small_px) + 14 + margin_right;
  const double height = base + 76;
  auto y_of = [&](double acc) { return base - plot_h * std::clamp(acc, 0.0, 1.0); };

  std::string s;
  s += fmt::format(
      R"(<svg xmlns="http://www.w3.org/2000/svg" width="{0:.0f}" height="{1:.0f}" viewBox="0 0 {0:.0f} {1:.0f}" font-family="{2}">)"
      "\n",
      width, height, kFont);
  s += fmt::format("<title>{}</title>\n", escape(title));
  s += fmt::format(R"(<rect x="0" y="0" width="{:.0f}" height="{:.0f}" fill="#ffffff"/>)"
                   "\n",
                   width, height);
  s += fmt::format(
      R"(<text x="{:.1f}" y="{:.1f}" font-size="16" font-weight="bold" text-anchor="middle">{}</text>)"
      "\n",
      width / 2, title_y, escape(title));

  // Legend: only the kinds of predictor that occur.
  double lx = margin_left;
  for (Kind k : {Kind::kHead, Kind::kExit, Kind::kMean}) {
    if (std::none_of(bars.begin(), bars.end(), [&](const Bar& b) { return b.kind == k; })) continue;
    s += fmt::format(R"(<rect x="{:.1f}" y="{:.1f}" width="12" height="12" fill="{}"/>)"
                     "\n",
                     lx, legend_y - 10, color(k));
    const std::string text = legend_text(k);
    if (k == Kind::kHead) {
      // h_S with a real subscript.
      s += fmt::format(
          R"(<text x="{:.1f}" y="{:.1f}" font-size="{}">combination head h<tspan font-size="9" dy="3">S</tspan><tspan dy="-3" dx="3">on C</tspan></text>)"
          "\n",
          lx + 17, legend_y, small_px);
    } else {
      s += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="{}">{}</text>)"
                       "\n",
                       lx + 17, legend_y, small_px, escape(text));
    }
    lx += 17 + text_width(text, small_px) + 22;
  }

  // Grid and y axis.
  for (int t = 0; t <= 100; t += 20) {
    const double y = y_of(t / 100.0);
    if (t > 0) {
      s += fmt::format(
          R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="#e3e3e3" stroke-width="1"/>)"
          "\n",
          margin_left, y, plot_right, y);
    }
    s += fmt::format(
        R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="#333333" stroke-width="1"/>)"
        "\n",
        margin_left - 5, y, margin_left, y);
    s += fmt::format(
        R"(<text x="{:.1f}" y="{:.1f}" font-size="{}" text-anchor="end" dominant-baseline="middle">{}</text>)"
        "\n",
        margin_left - 8, y, small_px, t);
  }
  s += fmt::format(
      R"svg(<text transform="translate({:.1f},{:.1f}) rotate(-90)" font-size="{}" text-anchor="middle">accuracy %</text>)svg"
      "\n",
      margin_left - 42, base - plot_h / 2, label_px);

  // Bars, then the no-failure reference over them so each bar can be read against it, then the
  // labels above the bars, whose halos keep them readable where the reference crosses them.
  for (size_t i = 0; i < bars.size(); ++i) {
    const Bar& b = bars[i];
    const FailurePattern& p = r.patterns[i];
    const double cx = b.x + b.w / 2, top = y_of(p.accuracy);
    s += fmt::format(
        R"(<rect class="bar" x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="{}"><title>failed: {}; answered by {}; accuracy {:.2f}%, preserved {:.2f}%</title></rect>)"
        "\n",
        cx - bar_w / 2, top, bar_w, base - top, color(b.kind),
        escape(p.failed.empty() ? "none" : join(p.failed, ", ")), escape(describe_answer(p.answer)),
        100 * p.accuracy, 100 * p.preserved);
    s += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="{}" text-anchor="middle">{}</text>)"
                     "\n",
                     cx, base + 18, label_px, escape(b.xlabel));
  }
  const double nf_y = y_of(r.no_failure_accuracy);
  s += fmt::format(
      R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="#c44e52" stroke-width="1.5" stroke-dasharray="6,4"/>)"
      "\n",
      margin_left, nf_y, plot_right, nf_y);
  s += fmt::format(
      R"(<text x="{:.1f}" y="{:.1f}" font-size="{}" fill="#c44e52" dominant-baseline="middle">{}</text>)"
      "\n",
      plot_right + 6, nf_y, small_px, escape(nf_label));
  for (size_t i = 0; i < bars.size(); ++i) {
    const Bar& b = bars[i];
    const double cx = b.x + b.w / 2, top = y_of(r.patterns[i].accuracy);
    s += fmt::format(
        R"(<text x="{:.1f}" y="{:.1f}" font-size="{}" text-anchor="middle" {}>{}</text>)"
        "\n",
        cx, top - 4, small_px, kHalo, b.value);
    s += fmt::format(
        R"(<text x="{:.1f}" y="{:.1f}" font-size="{}" font-weight="bold" fill="{}" text-anchor="middle" {}>{}</text>)"
        "\n",
        cx, top - 17, small_px, color(b.kind), kHalo, escape(b.label));
  }

  // Axes on top of the grid, then brackets naming each group of patterns.
  s += fmt::format(
      R"(<path d="M{:.1f},{:.1f} V{:.1f} H{:.1f}" fill="none" stroke="#333333" stroke-width="1"/>)"
      "\n",
      margin_left, plot_top - 10, base, plot_right);
  const size_t servers = r.patterns.empty() ? 0 : r.patterns.back().failed.size();
  for (const Group& g : groups) {
    if (g.failures == 0) continue;
    const double y = base + 30;
    s += fmt::format(
        R"(<path d="M{:.1f},{:.1f} V{:.1f} H{:.1f} V{:.1f}" fill="none" stroke="#777777" stroke-width="1"/>)"
        "\n",
        g.x0 + 4, y - 4, y, g.x1 - 4, y - 4);
    const std::string caption = g.failures == servers ? "all failed"
                                : g.failures == 1     ? "1 server failed"
                                                  : fmt::format("{} servers failed", g.failures);
    s += fmt::format(
        R"(<text x="{:.1f}" y="{:.1f}" font-size="{}" fill="#555555" text-anchor="middle">{}</text>)"
        "\n",
        (g.x0 + g.x1) / 2, y + 15, small_px, caption);
  }
  s += fmt::format(
      R"(<text x="{:.1f}" y="{:.1f}" font-size="{}" text-anchor="middle">failed servers</text>)"
      "\n",
      (margin_left + plot_right) / 2, base + 66, label_px);
  s += "</svg>\n";
  return s;
}

void write_failure_chart(const std::string& path, const FailureReport& r,
                         const std::string& title) {
  write_file_atomic(path, failure_chart_svg(r, title));
}

}  // namespace mel::app
