#include "sqlcopilot/beams.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>

namespace sqlcopilot {

namespace {

// The candidates of one step in the walk's order (score descending, flat index ascending), produced lazily: the
// best k by one pass with a small heap, k widened fourfold whenever the walk goes past them.
class Walk {
 public:
  template <typename Live>
  Walk(const at::Tensor& logprobs, const std::vector<Live>& live, int64_t want) : vocab_(logprobs.size(1)) {
    const at::Tensor lp = logprobs.contiguous();
    const float* values = lp.const_data_ptr<float>();
    totals_.resize(static_cast<size_t>(lp.numel()));
    for (size_t i = 0; i < live.size(); ++i)
      for (int64_t t = 0; t < vocab_; ++t)
        totals_[i * vocab_ + t] = live[i].score + static_cast<double>(values[i * vocab_ + t]);
    k_ = std::min<int64_t>(2 * want, static_cast<int64_t>(totals_.size()));
    fill();
  }

  // The next candidate's flat index, or -1 when all are walked.
  int64_t next() {
    if (emitted_ == order_.size()) {
      if (k_ >= static_cast<int64_t>(totals_.size())) return -1;
      k_ = std::min<int64_t>(4 * k_, static_cast<int64_t>(totals_.size()));
      fill();
    }
    return order_[emitted_++];
  }
  double total(int64_t flat) const { return totals_[flat]; }
  int64_t vocab() const { return vocab_; }

 private:
  bool before(int64_t a, int64_t b) const {
    return totals_[a] > totals_[b] || (totals_[a] == totals_[b] && a < b);
  }
  void fill() {  // order_ = the first k_ candidates in walk order (the ones already emitted stay the same)
    auto worse_on_top = [this](int64_t a, int64_t b) { return before(a, b); };
    std::vector<int64_t> heap;
    heap.reserve(static_cast<size_t>(k_));
    const auto count = static_cast<int64_t>(totals_.size());
    for (int64_t i = 0; i < count; ++i) {
      if (static_cast<int64_t>(heap.size()) < k_) {
        heap.push_back(i);
        std::push_heap(heap.begin(), heap.end(), worse_on_top);
      } else if (before(i, heap.front())) {
        std::pop_heap(heap.begin(), heap.end(), worse_on_top);
        heap.back() = i;
        std::push_heap(heap.begin(), heap.end(), worse_on_top);
      }
    }
    std::sort(heap.begin(), heap.end(), [this](int64_t a, int64_t b) { return before(a, b); });
    order_ = std::move(heap);
  }

  int64_t vocab_;
  std::vector<double> totals_;
  std::vector<int64_t> order_;
  size_t emitted_ = 0;
  int64_t k_ = 0;
};

}  // namespace

BeamSearch::BeamSearch(const at::Tensor& first_logits, int64_t num_beams, int64_t max_new_tokens, int64_t eos_id,
                       std::unordered_set<int64_t> stop_ids, BeamAllow allow, SchemaConstraint* constraint)
    : num_beams_(num_beams), max_new_tokens_(max_new_tokens), eos_id_(eos_id), stop_ids_(std::move(stop_ids)),
      allow_(std::move(allow)), constraint_(constraint) {
  if (num_beams < 1 || max_new_tokens < 1)
    throw std::invalid_argument("beam_search: num_beams (" + std::to_string(num_beams) + ") and max_new_tokens (" +
                                std::to_string(max_new_tokens) + ") must be at least 1");
  live_.push_back(Live{});
  if (constraint_) live_[0].state = constraint_->start();
  walk(first_logits.to(at::kFloat).reshape({1, -1}).log_softmax(-1));
}

void BeamSearch::advance(const at::Tensor& logits) {
  if (done_) throw std::logic_error("BeamSearch::advance after the search ended");
  ++result_.steps;
  ++length_;
  walk(logits.to(at::kFloat).log_softmax(-1));
}

// One step's walk over the candidates of the live beams (logprobs [live, V]) at token `length_`.
void BeamSearch::walk(const at::Tensor& logprobs) {
  const bool last = length_ == max_new_tokens_;
  std::vector<Live> chosen;
  tokens_.clear();
  parents_.clear();
  const auto walk_start = std::chrono::steady_clock::now();
  Walk walk(logprobs, live_, num_beams_);
  // At the last step every accepted candidate finishes and the walk would run through all of them; once
  // num_beams of them hold a token (not end-of-text) none after them can rank among the best num_beams (scores are
  // at most 0, so a lower one is no better after dividing by its length, equal or one shorter), so it stops there.
  int64_t last_full = 0;
  for (int64_t flat = walk.next(); flat >= 0; flat = walk.next()) {
    const int64_t beam = flat / walk.vocab(), token = flat % walk.vocab();
    if (allow_ && !allow_(beam, token)) continue;
    std::optional<SchemaConstraint::State> state;
    if (constraint_) {
      state = constraint_->advance(live_[beam].state, token);
      ++result_.constraint_checks;
      if (!state) continue;
    }
    const double score = walk.total(flat);
    const std::vector<int64_t>& so_far = live_[beam].tokens;
    if (eos_id_ >= 0 && token == eos_id_) {
      finished_.push_back(Hypothesis{so_far, score});
    } else if (stop_ids_.count(token) || last) {
      finished_.push_back(Hypothesis{so_far, score});
      finished_.back().tokens.push_back(token);
      if (last && ++last_full == num_beams_) break;
    } else {
      chosen.push_back(Live{so_far, score, state ? std::move(*state) : SchemaConstraint::State()});
      chosen.back().tokens.push_back(token);
      parents_.push_back(beam);
      tokens_.push_back(token);
      if (static_cast<int64_t>(chosen.size()) == num_beams_) break;
    }
  }
  result_.walk_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - walk_start).count();
  if (static_cast<int64_t>(finished_.size()) >= num_beams_ || chosen.empty()) {
    done_ = true;
    tokens_.clear();
    parents_.clear();
    return;
  }
  live_ = std::move(chosen);
}

BeamSearchResult BeamSearch::result() {
  std::vector<size_t> ranked(finished_.size());
  for (size_t i = 0; i < ranked.size(); ++i) ranked[i] = i;
  std::stable_sort(ranked.begin(), ranked.end(), [&](size_t a, size_t b) {
    return finished_[a].normalized() > finished_[b].normalized();
  });
  BeamSearchResult result = result_;
  for (size_t i = 0; i < ranked.size() && static_cast<int64_t>(i) < num_beams_; ++i)
    result.hypotheses.push_back(std::move(finished_[ranked[i]]));
  return result;
}

BeamSearchResult beam_search(const at::Tensor& first_logits, const BeamStep& step, int64_t num_beams,
                             int64_t max_new_tokens, int64_t eos_id, const std::unordered_set<int64_t>& stop_ids,
                             const BeamAllow& allow, SchemaConstraint* constraint) {
  BeamSearch search(first_logits, num_beams, max_new_tokens, eos_id, stop_ids, allow, constraint);
  while (!search.done()) search.advance(step(search.tokens(), search.parents()));
  return search.result();
}

}  // namespace sqlcopilot
