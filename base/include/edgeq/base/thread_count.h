// The one rule for every --threads flag and every library that takes a thread count:
// 0 means all cores available to this process; 1..max_threads() is taken as given; anything else is an
// error (a huge count would exhaust process ids; a negative one is nonsense).
#pragma once
#include <string_view>

namespace edgeq {

int available_cores();  // CPUs this process may run on (sched_getaffinity), at least 1
int max_threads();      // 4 x available_cores(): oversubscription beyond that only slows a run down
// 0 -> available_cores(); 1..max_threads() -> n; else throws edgeq::Error naming `what` (e.g. "--threads").
int resolve_threads(int n, std::string_view what = "--threads");

}  // namespace edgeq
