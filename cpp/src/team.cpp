#include "sqlcopilot/team.h"

#include <immintrin.h>

#include <chrono>

namespace sqlcopilot {

namespace {

// Spin on `done` with a pause; after a while yield the core on every round.
template <typename Done>
void spin_until(Done done) {
  for (int round = 0; !done(); ++round) {
    if (round < 4000) _mm_pause();
    else std::this_thread::yield();
  }
}

}  // namespace

Team::Team(int threads) : size_(threads < 1 ? 1 : threads) {
  for (int member = 1; member < size_; ++member) workers_.emplace_back([this, member] { work(member); });
}

Team::~Team() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_.store(true);
  }
  wake_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void Team::run(const std::function<void(int, int)>& job) {
  if (size_ == 1) return job(0, 1);
  job_ = &job;
  finished_.store(0, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mutex_);  // a sleeping worker cannot miss the new generation
    job_generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  job(0, size_);
  spin_until([&] { return finished_.load(std::memory_order_acquire) == size_ - 1; });
}

void Team::barrier() {
  if (size_ == 1) return;
  const uint64_t generation = barrier_generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) == size_ - 1) {
    arrived_.store(0, std::memory_order_relaxed);
    barrier_generation_.fetch_add(1, std::memory_order_release);
  } else {
    spin_until([&] { return barrier_generation_.load(std::memory_order_acquire) != generation; });
  }
}

void Team::work(int member) {
  uint64_t seen = 0;
  while (true) {
    // Between tokens the next run comes within microseconds: spin for up to a millisecond, then sleep.
    const auto sleep_after = std::chrono::steady_clock::now() + std::chrono::milliseconds(1);
    while (job_generation_.load(std::memory_order_acquire) == seen && !stopping_.load() &&
           std::chrono::steady_clock::now() < sleep_after)
      _mm_pause();
    if (job_generation_.load(std::memory_order_acquire) == seen && !stopping_.load()) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return job_generation_.load() != seen || stopping_.load(); });
    }
    if (stopping_.load()) return;
    seen = job_generation_.load(std::memory_order_acquire);
    (*job_)(member, size_);
    finished_.fetch_add(1, std::memory_order_release);
  }
}

}  // namespace sqlcopilot
