// The failure report for people and files: report.json's fields and the terminal table.
#pragma once
#include <string>

#include "core/json_reader.h"
#include "mel/failure.h"

namespace mel::app {

using method::FailurePattern;
using method::FailureReport;

// {"failures": [{"failed": [...], "answer": "...", "accuracy": x, "preserved": x, "loss": x}],
//  "preserved_mean": x, "preserved_worst": x, "no_failure_loss": x} (losses when known)
Json failure_report_json(const FailureReport& r);

// A fixed-width terminal table (failed servers | answered by | accuracy % | [loss (nats) |]
// preserved % | best alive exit) and a final line with the mean and worst preserved accuracy over single failures.
std::string failure_table(const FailureReport& r);

// "head 1+2", "exit 1", "exits 1,3 (averaged)", "exits 1,3 (mean)", "none": the answer spelled
// out for people.
std::string describe_answer(const FailurePattern& p);

}  // namespace mel::app
