// The team of threads that decodes one token: the intra-op OpenMP threads libtorch itself uses, one parallel region
// per token and cheap spin barriers inside it, instead of a fork and join of the pool around every matrix product
// (about 150 per token; measured here, forking that often costs about a fifth of the decode speed).
//
// The members are the same threads that just ran the prompt pass in the graph: a separate team would share the
// cores with them while OpenMP keeps them spinning after the prompt pass (measured here: the first ~6 ms of
// decoding ran about 15% slower that way, which is most of a short answer). Waiting members spin briefly, then
// yield their core; between tokens OpenMP parks its threads as usual, so an idle runner uses no CPU.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>

namespace sqlcopilot {

class Team {
 public:
  explicit Team(int threads);  // the calling thread is member 0
  Team(const Team&) = delete;
  Team& operator=(const Team&) = delete;

  int size() const { return size_; }

  // Runs job(member, members) on every member and returns when all have finished; `members` is size(), or fewer
  // when OpenMP grants fewer threads. Not reentrant.
  void run(const std::function<void(int, int)>& job);

  // Inside a job: returns once every member has called it (the same number of times).
  void barrier();

 private:
  const int size_;
  int active_ = 1;  // members of the current run
  std::atomic<int> arrived_{0};
  std::atomic<uint64_t> barrier_generation_{0};
};

}  // namespace sqlcopilot
