#include "app/chart.h"

#include "app/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "train/files.h"

namespace mel::app {

std::string svg_escape(const std::string& s) {
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

namespace {

constexpr const char* kFont = "DejaVu Sans, Helvetica, Arial, sans-serif";

enum class Kind { kHead, kExit, kAveraged, kMean, kNone };

Kind kind_of(const FailurePattern& p) {
  if (p.answer == "none" || p.answer.empty()) return Kind::kNone;
  if (p.answer.find('+') != std::string::npos) return Kind::kHead;
  if (p.answer.find(',') != std::string::npos) return p.averaged ? Kind::kAveraged : Kind::kMean;
  return Kind::kExit;
}

const char* color(Kind k) {
  switch (k) {
    case Kind::kHead:
      return "#4c72b0";
    case Kind::kExit:
      return "#dd8452";
    case Kind::kAveraged:
      return "#55a868";
    case Kind::kMean:
      return "#8172b3";
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
    case Kind::kAveraged:
      return "alive exits, probabilities averaged";
    case Kind::kMean:
      return "exits answering independently (mean)";
    case Kind::kNone:
      return "no answer";
  }
  return "";
}

// Short enough to sit above a bar; the colour says which kind of predictor it is.
std::string bar_label(const FailurePattern& p) {
  switch (kind_of(p)) {
    case Kind::kHead:
      return "h " + p.answer;
    case Kind::kExit:
      return "exit " + p.answer;
    case Kind::kAveraged:
      return "avg " + p.answer;
    case Kind::kMean:
      return "mean " + p.answer;
    case Kind::kNone:
      return "none";
  }
  return p.answer;
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
  return svg_escape(s);
}

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? sep : "") + parts[i];
  return out;
}

// Labels drawn over the grid or the dashed line get a white halo so they stay readable.
constexpr const char* kHalo =
    R"(stroke="#ffffff" stroke-width="6" stroke-linejoin="round" paint-order="stroke")";

// Sizes in px; the plot's y runs from plot_top (100 %) to base (0 %).
constexpr double kLabelPx = 12, kSmallPx = 11, kBarW = 36, kMinSlot = 50, kGroupGap = 18;
constexpr double kMarginLeft = 70, kMarginRight = 20, kTitleY = 28, kLegendY = 52;
constexpr double kPlotTop = 100;  // the headroom above it holds the top bars' labels
constexpr double kPlotH = 270, kBase = kPlotTop + kPlotH;

struct Bar {
  double x, w;  // slot
  std::string xlabel, label, value;
  Kind kind;
};
struct Group {
  double x0, x1;
  size_t failures;
};
struct Layout {
  std::vector<Bar> bars;      // one per pattern
  std::vector<Group> groups;  // bars grouped by number of failed servers
  double plot_right = 0, width = 0, height = 0;
  std::string nf_label;
};

double y_of(double acc) {
  return kBase - kPlotH * std::clamp(acc, 0.0, 1.0);
}

Layout layout(const FailureReport& r) {
  Layout l;
  double x = kMarginLeft + 16;
  for (size_t i = 0; i < r.patterns.size(); ++i) {
    const FailurePattern& p = r.patterns[i];
    if (i > 0 && p.failed.size() != r.patterns[i - 1].failed.size()) x += kGroupGap;
    Bar b;
    b.xlabel = p.failed.empty() ? "none failed" : join(p.failed, ",");
    b.label = bar_label(p);
    b.value = fmt::format("{:.1f}", 100 * p.accuracy);
    b.kind = kind_of(p);
    b.w = std::max({kMinSlot, text_width(b.xlabel, kLabelPx) + 10,
                    1.1 * text_width(b.label, kSmallPx) + 16, text_width(b.value, kSmallPx) + 8});
    b.x = x;
    x += b.w;
    if (l.groups.empty() || l.groups.back().failures != p.failed.size()) {
      l.groups.push_back({b.x, b.x + b.w, p.failed.size()});
    } else {
      l.groups.back().x1 = b.x + b.w;
    }
    l.bars.push_back(std::move(b));
  }
  l.plot_right = x + 10;
  l.nf_label = fmt::format("no failure {:.1f}", 100 * r.no_failure_accuracy);
  l.width = l.plot_right + text_width(l.nf_label, kSmallPx) + 14 + kMarginRight;
  l.height = kBase + 76;
  return l;
}

std::string svg_title(const Layout& l, const std::string& title) {
  std::string s;
  s += fmt::format(
      R"(<svg xmlns="http://www.w3.org/2000/svg" width="{0:.0f}" height="{1:.0f}" viewBox="0 0 {0:.0f} {1:.0f}" font-family="{2}">)"
      "\n",
      l.width, l.height, kFont);
  s += fmt::format("<title>{}</title>\n", escape(title));
  s += fmt::format(R"(<rect x="0" y="0" width="{:.0f}" height="{:.0f}" fill="#ffffff"/>)"
                   "\n",
                   l.width, l.height);
  s += fmt::format(
      R"(<text x="{:.1f}" y="{:.1f}" font-size="16" font-weight="bold" text-anchor="middle">{}</text>)"
      "\n",
      l.width / 2, kTitleY, escape(title));
  return s;
}

// Only the kinds of predictor that occur.
std::string svg_legend(const Layout& l) {
  std::string s;
  double lx = kMarginLeft;
  for (Kind k : {Kind::kHead, Kind::kExit, Kind::kAveraged, Kind::kMean}) {
    if (std::none_of(l.bars.begin(), l.bars.end(), [&](const Bar& b) { return b.kind == k; })) {
      continue;
    }
    s += fmt::format(R"(<rect x="{:.1f}" y="{:.1f}" width="12" height="12" fill="{}"/>)"
                     "\n",
                     lx, kLegendY - 10, color(k));
    const std::string text = legend_text(k);
    if (k == Kind::kHead) {
      // h_S with a real subscript.
      s += fmt::format(
          R"(<text x="{:.1f}" y="{:.1f}" font-size="{}">combination head h<tspan font-size="9" dy="3">S</tspan><tspan dy="-3" dx="3">on C</tspan></text>)"
          "\n",
          lx + 17, kLegendY, kSmallPx);
    } else {
      s += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="{}">{}</text>)"
                       "\n",
                       lx + 17, kLegendY, kSmallPx, escape(text));
    }
    lx += 17 + text_width(text, kSmallPx) + 22;
  }
  return s;
}

std::string svg_grid(const Layout& l) {
  std::string s;
  for (int t = 0; t <= 100; t += 20) {
    const double y = y_of(t / 100.0);
    if (t > 0) {
      s += fmt::format(
          R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="#e3e3e3" stroke-width="1"/>)"
          "\n",
          kMarginLeft, y, l.plot_right, y);
    }
    s += fmt::format(
        R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="#333333" stroke-width="1"/>)"
        "\n",
        kMarginLeft - 5, y, kMarginLeft, y);
    s += fmt::format(
        R"(<text x="{:.1f}" y="{:.1f}" font-size="{}" text-anchor="end" dominant-baseline="middle">{}</text>)"
        "\n",
        kMarginLeft - 8, y, kSmallPx, t);
  }
  s += fmt::format(
      R"svg(<text transform="translate({:.1f},{:.1f}) rotate(-90)" font-size="{}" text-anchor="middle">accuracy %</text>)svg"
      "\n",
      kMarginLeft - 42, kBase - kPlotH / 2, kLabelPx);
  return s;
}

// Bars, then the no-failure reference over them so each bar can be read against it, then the
// labels above the bars, whose halos keep them readable where the reference crosses them.
std::string svg_bars(const Layout& l, const FailureReport& r) {
  std::string s;
  for (size_t i = 0; i < l.bars.size(); ++i) {
    const Bar& b = l.bars[i];
    const FailurePattern& p = r.patterns[i];
    const double cx = b.x + b.w / 2, top = y_of(p.accuracy);
    s += fmt::format(
        R"(<rect class="bar" x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="{}"><title>failed: {}; answered by {}; accuracy {:.2f}%, preserved {:.2f}%</title></rect>)"
        "\n",
        cx - kBarW / 2, top, kBarW, kBase - top, color(b.kind),
        escape(p.failed.empty() ? "none" : join(p.failed, ", ")), escape(describe_answer(p)),
        100 * p.accuracy, 100 * p.preserved);
    s += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="{}" text-anchor="middle">{}</text>)"
                     "\n",
                     cx, kBase + 18, kLabelPx, escape(b.xlabel));
  }
  const double nf_y = y_of(r.no_failure_accuracy);
  s += fmt::format(
      R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="#c44e52" stroke-width="1.5" stroke-dasharray="6,4"/>)"
      "\n",
      kMarginLeft, nf_y, l.plot_right, nf_y);
  s += fmt::format(
      R"(<text x="{:.1f}" y="{:.1f}" font-size="{}" fill="#c44e52" dominant-baseline="middle">{}</text>)"
      "\n",
      l.plot_right + 6, nf_y, kSmallPx, escape(l.nf_label));
  for (size_t i = 0; i < l.bars.size(); ++i) {
    const Bar& b = l.bars[i];
    const double cx = b.x + b.w / 2, top = y_of(r.patterns[i].accuracy);
    s += fmt::format(
        R"(<text x="{:.1f}" y="{:.1f}" font-size="{}" text-anchor="middle" {}>{}</text>)"
        "\n",
        cx, top - 4, kSmallPx, kHalo, b.value);
    s += fmt::format(
        R"(<text x="{:.1f}" y="{:.1f}" font-size="{}" font-weight="bold" fill="{}" text-anchor="middle" {}>{}</text>)"
        "\n",
        cx, top - 17, kSmallPx, color(b.kind), kHalo, escape(b.label));
  }
  return s;
}

// Axes on top of the grid, then brackets naming each group of patterns.
std::string svg_axes(const Layout& l, const FailureReport& r) {
  std::string s;
  s += fmt::format(
      R"(<path d="M{:.1f},{:.1f} V{:.1f} H{:.1f}" fill="none" stroke="#333333" stroke-width="1"/>)"
      "\n",
      kMarginLeft, kPlotTop - 10, kBase, l.plot_right);
  const size_t servers = r.patterns.empty() ? 0 : r.patterns.back().failed.size();
  for (const Group& g : l.groups) {
    if (g.failures == 0) continue;
    const double y = kBase + 30;
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
        (g.x0 + g.x1) / 2, y + 15, kSmallPx, caption);
  }
  s += fmt::format(
      R"(<text x="{:.1f}" y="{:.1f}" font-size="{}" text-anchor="middle">failed servers</text>)"
      "\n",
      (kMarginLeft + l.plot_right) / 2, kBase + 66, kLabelPx);
  return s;
}

}  // namespace

std::string failure_chart_svg(const FailureReport& r, const std::string& title) {
  const Layout l = layout(r);
  return svg_title(l, title) + svg_legend(l) + svg_grid(l) + svg_bars(l, r) + svg_axes(l, r) +
         "</svg>\n";
}

void write_failure_chart(const std::string& path, const FailureReport& r,
                         const std::string& title) {
  train::write_file_atomic(path, failure_chart_svg(r, title));
}

}  // namespace mel::app
