// A fixed team of threads for the decode kernels: one `run` per token and cheap barriers inside it, instead of a
// fork and join of the intra-op pool around every matrix product (about 150 per token; measured here, forking
// that often costs about a fifth of the decode speed).
//
// Waiting threads spin briefly, then yield their core (a partner descheduled by other work on the machine gets to
// run), and between runs they sleep, so an idle runner uses no CPU.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sqlcopilot {

class Team {
 public:
  explicit Team(int threads);  // the calling thread is member 0; threads - 1 workers are started
  ~Team();
  Team(const Team&) = delete;
  Team& operator=(const Team&) = delete;

  int size() const { return size_; }

  // Runs job(member, size) on every member and returns when all have finished. Not reentrant.
  void run(const std::function<void(int, int)>& job);

  // Inside a job: returns once every member has called it (the same number of times).
  void barrier();

 private:
  void work(int member);

  const int size_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint64_t> job_generation_{0};
  std::atomic<int> finished_{0};
  std::atomic<int> arrived_{0};
  std::atomic<uint64_t> barrier_generation_{0};
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
};

}  // namespace sqlcopilot
