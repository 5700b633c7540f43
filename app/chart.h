// A self-contained SVG bar chart of a failure report: one bar per failure pattern, labelled with
// the failed servers and the predictor that answers, against the no-failure accuracy.
#pragma once
#include <string>

#include "mel/failure.h"

namespace mel::app {

using method::FailureReport;

// Text for SVG/XML: & < > " ' escaped.
std::string svg_escape(const std::string& s);

std::string failure_chart_svg(const FailureReport& r, const std::string& title);
// Written to `path` + ".tmp" and renamed into place.
void write_failure_chart(const std::string& path, const FailureReport& r, const std::string& title);

}  // namespace mel::app
