// The one thread pool of edgeq (convert, quantize and the runtime share it).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace edgeq {

// Fixed-size pool; run(n, fn) calls fn(i, worker) for i in [0, n) spread over the workers and the caller
// (worker 0), handing out tasks in increasing order. When tasks throw, no new task starts, the running ones
// finish, and run rethrows the exception of the lowest-numbered failing task (the same error for any pool
// size). run is not reentrant: a task must not call run on its own pool.
// Waiting: a worker between runs, and the caller for the last task, first poll for a short while (kSpinMicros)
// and then sleep on a condition variable. Batch-1 decoding starts about a hundred runs per token, a few
// hundred microseconds apart; a sleeping worker's wake-up costs tens of microseconds each time.
class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // n_threads >= 1 (the caller counts as one); values < 1 mean 1
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  void run(int64_t n_tasks, const std::function<void(int64_t task, int worker)>& fn);

 private:
  static constexpr int kSpinMicros = 100;
  void worker_loop(int worker);
  void run_tasks(int worker);
  int n_threads_;
  std::vector<std::thread> threads_;
  std::mutex mu_;  // guards the sleeps, stop_ and error_
  std::condition_variable cv_start_, cv_done_;
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<int> active_{0};
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;
  std::exception_ptr error_;
  int64_t error_task_ = 0;
};

}  // namespace edgeq
