// Beam search bookkeeping, exactly as sqlcopilot_core/beams.py's beam_search (the same candidates, in the same order,
// for the same logits):
//
// - logprobs are the float32 log_softmax of a step's float32 logits; a beam's score is the float64 sum of its
//   tokens' logprobs.
// - start: one live beam (no tokens, score 0) whose logprobs are the prompt's last position.
// - each step: the candidates (beam i, token t, score_i + lp[i][t]) of every live beam are walked by score
//   descending, ties by the flat index i * V + t ascending; `allow(i, t)` may reject one (skipped), and so may the
//   schema constraint: each live beam carries its state, a candidate whose advance(state, t) is nullopt is skipped,
//   an accepted one's new state goes with the new beam (beams.py's `constraint`). An accepted
//   candidate whose token is end-of-text is a finished hypothesis (end-of-text excluded); one whose token is a stop
//   id, or that reaches max_new_tokens, is a finished hypothesis with that token; any other is a new live beam
//   (parent i). The walk ends when num_beams new live beams are collected or the candidates run out.
// - decoding ends when num_beams hypotheses have finished or no beam is live (max_new_tokens finishes every beam).
// - the result: finished hypotheses by score / max(1, len(tokens)) descending (ties: the order they finished), at
//   most num_beams of them.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <unordered_set>
#include <vector>

#include "sqlcopilot/constraint.h"

namespace sqlcopilot {

struct Hypothesis {
  std::vector<int64_t> tokens;
  double score = 0.0;  // sum of the tokens' log-probabilities
  double normalized() const { return score / static_cast<double>(std::max<size_t>(1, tokens.size())); }
};

// step(tokens, parents): feed tokens[j] to a copy of live beam parents[j] (the caller reorders its caches) and
// return the next logits [tokens.size(), V].
using BeamStep = std::function<at::Tensor(const std::vector<int64_t>& tokens, const std::vector<int64_t>& parents)>;
using BeamAllow = std::function<bool(int64_t beam, int64_t token)>;

struct BeamSearchResult {
  std::vector<Hypothesis> hypotheses;  // best first
  int64_t steps = 0;                   // calls of `step`
  double walk_ms = 0.0;                // the candidate walks (bookkeeping and constraint, not `step`)
  int64_t constraint_checks = 0;       // advance() calls of the constraint
};

// The same search one step at a time, so that the steps of several searches can be run as one batch: after
// construction and after each advance(), done() says whether it has ended; if not, tokens()/parents() are the step it
// wants (feed tokens[j] to a copy of live beam parents[j]) and advance() takes that step's logits [tokens.size(), V].
class BeamSearch {
 public:
  // The arguments of beam_search below; `constraint` (may be null) must outlive the search.
  BeamSearch(const at::Tensor& first_logits, int64_t num_beams, int64_t max_new_tokens, int64_t eos_id,
             std::unordered_set<int64_t> stop_ids, BeamAllow allow = nullptr, SchemaConstraint* constraint = nullptr);
  bool done() const { return done_; }
  const std::vector<int64_t>& tokens() const { return tokens_; }
  const std::vector<int64_t>& parents() const { return parents_; }
  void advance(const at::Tensor& logits);
  // The finished hypotheses, best first (call once, when done()).
  BeamSearchResult result();

 private:
  struct Live {
    std::vector<int64_t> tokens;
    double score = 0.0;
    SchemaConstraint::State state;  // the constraint's state after these tokens (unused without one)
  };
  void walk(const at::Tensor& logprobs);

  int64_t num_beams_, max_new_tokens_, eos_id_;
  std::unordered_set<int64_t> stop_ids_;
  BeamAllow allow_;
  SchemaConstraint* constraint_;
  int64_t length_ = 1;
  bool done_ = false;
  std::vector<Live> live_;
  std::vector<Hypothesis> finished_;
  std::vector<int64_t> tokens_, parents_;
  BeamSearchResult result_;
};

// eos_id < 0: no end-of-text token. `constraint` (may be null): the schema constraint every accepted token must
// advance (num_beams 1 with it is constrained greedy decoding). Throws std::invalid_argument for num_beams or
// max_new_tokens below 1.
BeamSearchResult beam_search(const at::Tensor& first_logits, const BeamStep& step, int64_t num_beams,
                             int64_t max_new_tokens, int64_t eos_id, const std::unordered_set<int64_t>& stop_ids,
                             const BeamAllow& allow = nullptr, SchemaConstraint* constraint = nullptr);

}  // namespace sqlcopilot
