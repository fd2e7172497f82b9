#include "sqlcopilot/team.h"

#include <immintrin.h>
#include <omp.h>

#include <thread>

namespace sqlcopilot {

Team::Team(int threads) : size_(threads < 1 ? 1 : threads) {}

void Team::run(const std::function<void(int, int)>& job) {
  if (size_ == 1) {
    active_ = 1;
    return job(0, 1);
  }
#pragma omp parallel num_threads(size_)
  {
#pragma omp single
    active_ = omp_get_num_threads();  // the implied barrier publishes it to every member
    job(omp_get_thread_num(), active_);
  }
}

void Team::barrier() {
  if (active_ == 1) return;
  const uint64_t generation = barrier_generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) == active_ - 1) {
    arrived_.store(0, std::memory_order_relaxed);
    barrier_generation_.fetch_add(1, std::memory_order_release);
    return;
  }
  // spin with a pause; after a while yield the core on every round (a partner descheduled by other work gets to run)
  for (int round = 0; barrier_generation_.load(std::memory_order_acquire) == generation; ++round) {
    if (round < 4000) _mm_pause();
    else std::this_thread::yield();
  }
}

}  // namespace sqlcopilot
